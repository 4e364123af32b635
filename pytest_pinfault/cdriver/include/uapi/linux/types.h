/* pytest-pinfault C-driver bridge: uapi <linux/types.h>, plain typedefs only (the
 * layout pass that reads uapi headers for the tests uses this directory alone). */
#ifndef PINFAULT_UAPI_TYPES_H
#define PINFAULT_UAPI_TYPES_H
typedef signed char __s8;
typedef unsigned char __u8;
typedef short __s16;
typedef unsigned short __u16;
typedef int __s32;
typedef unsigned int __u32;
typedef long long __s64;
typedef unsigned long long __u64;
typedef __u16 __le16;
typedef __u32 __le32;
typedef __u64 __le64;
typedef __u64 __aligned_u64;
#endif
