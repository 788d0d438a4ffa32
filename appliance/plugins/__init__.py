"""Which plugins there are: the catalog, and the LV2 scan behind it (liblilv, in a child process)."""
