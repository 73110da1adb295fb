"""The WeChat push protocol: signatures, wire formats (XML and JSON) and passive answers. No I/O."""
