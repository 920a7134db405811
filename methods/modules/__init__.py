"""The ``nn.Module`` half of each method: ``modules/<name>.py`` holds the modules of ``methods/<name>.py``.

These import torch; the method files do not, and import them only when a module is built, merged or linked
(see :mod:`autopeft.methods.base`). A module here is built from shapes and plain numbers and never imports
its method file, so the dependency runs one way.
"""
