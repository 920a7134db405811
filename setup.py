"""Package discovery, so that no folder can be left out of the wheel.

Every package under ``autopeft/`` is found, and so is every package under the top-level folders that
install inside it (``methods/`` -> ``autopeft.methods``, ``kernels/`` -> ``autopeft.kernels``,
``search_spaces/`` -> ``autopeft.search_spaces``, as the design card lays them out); ``pyproject.toml``
alone can either discover packages or map folders to other names, not both. Everything else about the
project is in ``pyproject.toml``. ``tests/test_packaging.py`` checks that every folder with Python files
is a package and that the built wheel holds all of them.
"""

from setuptools import find_packages, setup

MAPPED = {"methods": "autopeft.methods", "kernels": "autopeft.kernels",
          "search_spaces": "autopeft.search_spaces"}

packages = find_packages(include=["autopeft", "autopeft.*"])
package_dir = {"autopeft": "autopeft"}
for folder, name in MAPPED.items():
    package_dir[name] = folder
    packages += [name] + [f"{name}.{sub}" for sub in find_packages(folder)]

setup(packages=packages, package_dir=package_dir)
