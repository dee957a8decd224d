"""The plugin contract: discovery, lazy targets, failures, clashes, block- and allow-lists."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import PLUGIN_DISTRIBUTIONS, installed_plugins
from fake_plugins import make_plugin, run_cli, run_python

from dicomnode.errors import PluginNotFoundError
from dicomnode.plugins import (
    GrinderSpec,
    PluginInfo,
    PluginRegistry,
    load_plugins,
)

GOOD_PLUGIN = """
from dicomnode.plugins import GrinderSpec, OutputSpec, hookimpl

@hookimpl
def dicomnode_grinders():
    yield GrinderSpec("shout", "shout_impl:ShoutGrinder", "upper-cases")

@hookimpl
def dicomnode_outputs():
    yield OutputSpec("wrongtype", "shout_impl:NotAnOutput", "not an output at all")
"""

GOOD_IMPL = """
from dicomnode.extension.grinders import Grinder

class ShoutGrinder(Grinder):
    def __call__(self, datasets):
        return [str(d).upper() for d in datasets]

class NotAnOutput:
    pass
"""


def plugins_json(result) -> dict[str, dict]:
    assert result.returncode == 0, result.stderr
    return {entry["name"]: entry for entry in json.loads(result.stdout)}


def test_the_core_registers_its_builtins_through_the_hooks() -> None:
    registry = load_plugins(load=[])
    core = registry.plugins[0]
    assert core.builtin and core.distribution == "dicomnode" and core.status == "active"
    assert "identity" in registry.contributions("grinder")
    assert registry.contributions("grinder")["identity"].distribution == "dicomnode"


def test_an_installed_plugin_is_discovered_with_its_contributions() -> None:
    registry = load_plugins()
    example = next(p for p in registry.plugins if p.name == "example")
    assert (example.distribution, example.version, example.status) == ("dicomnode-example", "1.2.0", "active")
    assert {spec.name for spec in example.contributions} == {"example-modalities", "example-log", "example-hello",
                                                             "example-counting", "example-folder"}


def test_lazy_targets_are_imported_on_first_use_only() -> None:
    result = run_python("""
        import sys
        from dicomnode.plugins import load_plugins
        registry = load_plugins()
        before = "dicomnode_example.grinders" in sys.modules
        grinder = registry.grinder("example-modalities")
        after = "dicomnode_example.grinders" in sys.modules
        print(before, after, grinder.__name__)
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True", "ModalityGrinder"]


def test_the_plugins_loaded_are_exactly_the_plugins_installed() -> None:
    expected = os.environ.get("DICOMNODE_EXPECTED_PLUGINS")
    if expected is None:  # outside nox: the first-party distributions present, and the example plugin
        wanted = installed_plugins() | {"example"}
    else:
        wanted = {name for name in expected.split(",") if name}
    registry = load_plugins(strict=True)
    loaded = {p.name for p in registry.plugins if not p.builtin and p.status == "active"}
    assert loaded == wanted
    assert set(PLUGIN_DISTRIBUTIONS) >= loaded - {"example"}


def test_import_dicomnode_imports_neither_numpy_nor_nibabel() -> None:
    result = run_python("""
        import sys
        import dicomnode, dicomnode.plugins
        registry = dicomnode.plugins.load_plugins()
        import dicomnode.cli
        print(sorted(m for m in ("numpy", "nibabel") if m in sys.modules))
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_plugin_that_raises_on_import_is_one_warning_and_the_rest_still_loads(tmp_path: Path) -> None:
    site = make_plugin(tmp_path / "site", "dicomnode-broken", "broken_plugin", "raise RuntimeError('kaboom')")
    result = run_cli("plugins", "--json", site=site)
    plugins = plugins_json(result)
    assert plugins["broken"]["status"] == "failed"
    assert "import" in plugins["broken"]["reason"] and "kaboom" in plugins["broken"]["reason"]
    assert plugins["example"]["status"] == "active"
    warnings = [line for line in result.stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 1, result.stderr
    assert "dicomnode-broken" in warnings[0] and "kaboom" in warnings[0]


def test_strict_mode_turns_a_plugin_failure_into_an_error(tmp_path: Path) -> None:
    site = make_plugin(tmp_path / "site", "dicomnode-broken", "broken_plugin", "raise RuntimeError('kaboom')")
    result = run_cli("plugins", site=site, env={"DICOMNODE_STRICT_PLUGINS": "1"})
    assert result.returncode == 2
    assert "dicomnode-broken" in result.stderr and "kaboom" in result.stderr


def test_a_plugin_with_an_unknown_hook_fails_validation(tmp_path: Path) -> None:
    source = """
        from dicomnode.plugins import hookimpl
        @hookimpl
        def dicomnode_grinderz():
            return []
    """
    site = make_plugin(tmp_path / "site", "dicomnode-typo", "typo_plugin", source)
    plugins = plugins_json(run_cli("plugins", "--json", site=site))
    assert plugins["typo"]["status"] == "failed"
    assert "validate" in plugins["typo"]["reason"] and "dicomnode_grinderz" in plugins["typo"]["reason"]


def test_a_plugin_for_another_core_version_is_not_imported(tmp_path: Path) -> None:
    marker = tmp_path / "imported"
    source = f"open({str(marker)!r}, 'w').write('yes')"
    site = make_plugin(tmp_path / "site", "dicomnode-future", "future_plugin", source,
                       requires=("dicomnode>=7.0,<8",))
    plugins = plugins_json(run_cli("plugins", "--json", site=site))
    assert plugins["future"]["status"] == "failed"
    assert "needs dicomnode >=7.0,<8" in plugins["future"]["reason"]
    assert not marker.exists()


def test_a_hook_returning_the_wrong_records_fails_at_contribute(tmp_path: Path) -> None:
    source = """
        from dicomnode.plugins import OutputSpec, hookimpl
        @hookimpl
        def dicomnode_grinders():
            yield OutputSpec("mixed-up", "x.y:Z", "an output where grinders belong")
    """
    site = make_plugin(tmp_path / "site", "dicomnode-mixed", "mixed_plugin", source)
    plugins = plugins_json(run_cli("plugins", "--json", site=site))
    assert plugins["mixed"]["status"] == "failed"
    assert "contribute" in plugins["mixed"]["reason"]


def test_the_same_name_from_two_distributions_is_an_error_naming_both(tmp_path: Path) -> None:
    site = tmp_path / "site"
    for dist, module in (("dicomnode-first", "first_plugin"), ("dicomnode-second", "second_plugin")):
        make_plugin(site, dist, module, """
            from dicomnode.plugins import GrinderSpec, hookimpl
            @hookimpl
            def dicomnode_grinders():
                yield GrinderSpec("same", "dicomnode.extension.grinders:IdentityGrinder", "clash")
        """)
    result = run_cli("plugins", site=site)
    assert result.returncode == 2
    assert "'same'" in result.stderr
    assert "dicomnode-first" in result.stderr and "dicomnode-second" in result.stderr


def test_a_blocked_plugin_is_listed_as_blocked_and_not_imported(tmp_path: Path) -> None:
    marker = tmp_path / "imported"
    site = make_plugin(tmp_path / "site", "dicomnode-noisy", "noisy_plugin",
                       f"open({str(marker)!r}, 'w').write('yes')")
    plugins = plugins_json(run_cli("plugins", "--json", site=site,
                                   env={"DICOMNODE_DISABLE_PLUGINS": "noisy, example"}))
    assert plugins["noisy"]["status"] == "blocked"
    assert plugins["example"]["status"] == "blocked"
    assert "DICOMNODE_DISABLE_PLUGINS" in plugins["noisy"]["reason"]
    assert not marker.exists()


def test_the_allow_list_loads_only_the_plugins_it_names() -> None:
    registry = load_plugins(load=["example"])
    statuses = {p.name: p.status for p in registry.plugins if not p.builtin}
    assert statuses.pop("example") == "active"
    assert set(statuses.values()) <= {"blocked"}


def test_a_blocked_plugins_name_says_it_is_blocked() -> None:
    registry = load_plugins(disable=["example"])
    with pytest.raises(PluginNotFoundError, match="blocked"):
        registry.grinder("example-modalities")


def test_asking_for_a_first_party_name_nobody_provides_says_which_distribution_to_install() -> None:
    core = PluginInfo("core", "dicomnode", "0.1.0", "active", builtin=True)
    registry = PluginRegistry((core,), {})
    with pytest.raises(PluginNotFoundError, match=r"pip install dicomnode-numpy"):
        registry.grinder("numpy")
    with pytest.raises(LookupError, match=r"no plugin provides the output 'carrier-pigeon'"):
        registry.output("carrier-pigeon")


def test_asking_for_a_name_of_a_failed_plugin_says_why_it_failed(tmp_path: Path) -> None:
    site = make_plugin(tmp_path / "site", "dicomnode-numpy-fork", "fork_plugin", "import nonexistent_module_xyz",
                       entry_name="fork")
    result = run_python("""
        from dicomnode.plugins import load_plugins
        try:
            load_plugins().grinder("something")
        except LookupError as error:
            print(error)
    """, site=site)
    assert "dicomnode-numpy-fork" in result.stdout and "nonexistent_module_xyz" in result.stdout


def test_plugins_check_fails_on_a_target_that_cannot_be_imported_or_has_the_wrong_type(tmp_path: Path) -> None:
    site = make_plugin(tmp_path / "site", "dicomnode-shout", "shout_plugin", GOOD_PLUGIN)
    (site / "shout_impl.py").write_text(GOOD_IMPL)
    result = run_cli("plugins", "check", site=site)
    assert result.returncode == 1
    assert "wrongtype" in result.stdout and "not a subclass of dicomnode.extension.outputs.PipelineOutput" in result.stdout
    (site / "shout_impl.py").unlink()
    result = run_cli("plugins", "check", site=site)
    assert result.returncode == 1
    assert "cannot load 'shout_impl:ShoutGrinder'" in result.stdout


def test_plugins_check_passes_when_every_target_loads(tmp_path: Path) -> None:
    site = make_plugin(tmp_path / "site", "dicomnode-shout", "shout_plugin",
                       GOOD_PLUGIN.replace('yield OutputSpec("wrongtype", "shout_impl:NotAnOutput", '
                                           '"not an output at all")', "return []"))
    (site / "shout_impl.py").write_text(GOOD_IMPL)
    result = run_cli("plugins", "check", site=site)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 problem(s)" in result.stdout


def test_a_registered_class_target_needs_no_import() -> None:
    from dicomnode.extension.grinders import IdentityGrinder

    spec = GrinderSpec("direct", IdentityGrinder, "a class, not a string")
    assert not spec.is_lazy and spec.load() is IdentityGrinder


@pytest.mark.parametrize("name", ["Numpy", "has space", "-lead", "trail-", "double--hyphen", ""])
def test_contribution_names_must_be_lowercase_slugs(name: str) -> None:
    with pytest.raises(ValueError, match="lowercase slug"):
        GrinderSpec(name, "a.b:C", "x")


@pytest.mark.parametrize("target", ["no_colon", "a.b:", ":C", "a b:C", 42])
def test_lazy_targets_must_name_a_module_and_an_attribute(target: object) -> None:
    with pytest.raises(ValueError, match="target"):
        GrinderSpec("fine", target, "x")


def test_cli_plugins_lists_name_distribution_version_status_and_contributions() -> None:
    result = run_cli("plugins")
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["NAME", "DISTRIBUTION", "VERSION", "STATUS", "CONTRIBUTIONS"]
    example = next(row for row in rows if row.startswith("example "))
    assert "dicomnode-example" in example and "1.2.0" in example and "active" in example
    assert "grinder: example-modalities" in example
    assert not any(row.startswith("core ") for row in rows)
    assert any(row.startswith("core ") for row in run_cli("plugins", "--all").stdout.splitlines())


def test_cli_version_names_the_core_and_every_plugin() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[0].startswith("dicomnode 0.")
    assert any("dicomnode-example 1.2.0" in line for line in lines[1:])


def test_a_plugin_can_add_a_cli_command() -> None:
    result = run_cli("example-hello", "operator")
    assert result.returncode == 0 and result.stdout.strip() == "hello, operator"
    assert "example-hello" in run_cli("--help").stdout


def test_every_name_in_dicomnode_all_can_be_imported() -> None:
    import dicomnode

    for name in dicomnode.__all__:
        assert getattr(dicomnode, name) is not None, name
