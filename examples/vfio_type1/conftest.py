"""Declares the VFIO example's driver fault sites for the whole run."""

from .driver import SITES


def pytest_pinfault_declare_sites(config, declare):
    for name, (errnos, meaning) in SITES.items():
        declare(name, errnos, kernel="drivers/vfio/vfio_iommu_type1.c", meaning=meaning)
