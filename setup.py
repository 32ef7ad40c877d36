"""The wheel's packages: every package under `src/`, plus the repository's top-level `model_cards/` (card templates)
as `videorft_hf.model_cards`, which pyproject.toml's `[tool.setuptools.package-dir]` maps to that folder.

Everything else (metadata, dependencies, package data) is in pyproject.toml; a `packages.find` table there cannot add
a package that lives outside its `where` folder, hence this file.
"""

from setuptools import find_packages, setup

setup(packages=[*find_packages("src"), "videorft_hf.model_cards"])
