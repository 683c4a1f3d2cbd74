"""What pyproject.toml cannot say: the demo's modules stay out of the wheel.

`easeoff.tasks.catalog` (the demo's and the tests' example jobs), `catalog_spans` (the
nemesis's), `demo_schema` (their tables) and `shards` (where the demo finds a shard) live in
the repository for `scripts/demo.sh` and the tests, which run on the editable install; an app
installing the wheel gets none of them.
"""

from setuptools import setup
from setuptools.command.build_py import build_py

DEMO_MODULES = frozenset(
    {
        ("easeoff.tasks", "catalog"),
        ("easeoff.tasks", "catalog_spans"),
        ("easeoff.tasks", "demo_schema"),
        ("easeoff.tasks", "shards"),
    }
)


class BuildPyWithoutDemo(build_py):  # type: ignore[misc]
    def find_package_modules(self, package: str, package_dir: str) -> list[tuple[str, str, str]]:
        found: list[tuple[str, str, str]] = super().find_package_modules(package, package_dir)
        return [module for module in found if (module[0], module[1]) not in DEMO_MODULES]


setup(cmdclass={"build_py": BuildPyWithoutDemo})
