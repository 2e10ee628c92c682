# SPDX-License-Identifier: MIT
"""Print where the spardl package goes for this interpreter and prefix."""
import os
import site
import sys
import sysconfig

prefix = os.path.normpath(sys.argv[1])
for d in site.getsitepackages():
    rel = os.path.relpath(d, prefix)
    if not rel.startswith("..") and rel.startswith("lib"):
        print(d)
        break
else:
    print(sysconfig.get_path("purelib", "posix_prefix", vars={"base": prefix, "platbase": prefix}))
