/* pytest-pinfault C-driver bridge: uapi <linux/ioctl.h> (asm-generic encoding). */
#ifndef PINFAULT_UAPI_IOCTL_H
#define PINFAULT_UAPI_IOCTL_H
#define _IOC_NRSHIFT 0
#define _IOC_TYPESHIFT 8
#define _IOC_SIZESHIFT 16
#define _IOC_DIRSHIFT 30
#define _IOC_NONE 0U
#define _IOC_WRITE 1U
#define _IOC_READ 2U
#define _IOC(dir, type, nr, size) \
	(((dir) << _IOC_DIRSHIFT) | ((type) << _IOC_TYPESHIFT) | ((nr) << _IOC_NRSHIFT) | ((size) << _IOC_SIZESHIFT))
#define _IO(type, nr) _IOC(_IOC_NONE, (type), (nr), 0)
#define _IOR(type, nr, T) _IOC(_IOC_READ, (type), (nr), sizeof(T))
#define _IOW(type, nr, T) _IOC(_IOC_WRITE, (type), (nr), sizeof(T))
#define _IOWR(type, nr, T) _IOC(_IOC_READ | _IOC_WRITE, (type), (nr), sizeof(T))
#endif
