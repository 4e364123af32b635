"""pinbuf: a C driver under the C-driver bridge, with its buggy variants."""
