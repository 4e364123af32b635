"""udmabuf example: driver model, buggy twins and their tests."""
