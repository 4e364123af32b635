"""VFIO type1 example: driver model, buggy twins and their tests."""
