"""Drop the saved ipywidgets state from notebooks: it is large, changes every run, and nbval ignores it."""

import sys

import nbformat

for path in sys.argv[1:]:
    nb = nbformat.read(path, as_version=4)
    if nb.metadata.pop("widgets", None) is not None:
        nbformat.write(nb, path)
