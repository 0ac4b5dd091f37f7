raise ImportError("xbench_broken_import needs a library that is not installed")
