//! Map keys and values shared by the XDP program and its loader.
