"""Ships the top-level `rules/` (the one source of truth) inside the wheel as `healer/default_rules/`.

Everything else is declared in pyproject.toml. An editable install reads `rules/` directly
(see `healer.rules.loading.packaged_directory`), so nothing is copied into the source tree.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithRules(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        target = Path(self.build_lib) / "healer" / "default_rules"
        target.mkdir(parents=True, exist_ok=True)
        for rule_file in sorted(Path(__file__).resolve().parent.joinpath("rules").glob("*.yaml")):
            self.copy_file(str(rule_file), str(target / rule_file.name))


setup(cmdclass={"build_py": BuildWithRules})
