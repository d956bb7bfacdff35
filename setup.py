"""Install lib_users: `pip install .` gives the commands lib_users and fd_users."""

import re

from setuptools import setup

with open("lib_users.py", encoding="utf-8") as source:
    VERSION = re.search(r'^__version__ = "([^"]+)"', source.read(), re.M).group(1)

with open("README.md", encoding="utf-8") as readme:
    LONG_DESCRIPTION = readme.read()

setup(
    name="lib_users",
    version=VERSION,
    description="Find processes that still use deleted files, such as libraries "
                "replaced by a package upgrade",
    long_description=LONG_DESCRIPTION,
    long_description_content_type="text/markdown",
    license="GPL-2.0-only",
    py_modules=["lib_users"],
    entry_points={"console_scripts": ["lib_users = lib_users:main",
                                      "fd_users = lib_users:fd_main"]},
    data_files=[("share/man/man1", ["lib_users.1", "fd_users.1"])],
    python_requires=">=3.8",
    classifiers=[
        "Environment :: Console",
        "Intended Audience :: System Administrators",
        "License :: OSI Approved :: GNU General Public License v2 (GPLv2)",
        "Operating System :: POSIX :: Linux",
        "Programming Language :: Python :: 3",
        "Topic :: System :: Systems Administration",
    ],
)
