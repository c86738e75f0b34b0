"""Every routed command exists and answers --help with its own options."""

import importlib

import pytest

from tessera import cli

ROUTES = [(g, n, m) for g, cmds in cli.COMMANDS.items() for n, m in cmds.items()]
ROUTES += [(None, n, m) for n, m in cli.TOP_LEVEL.items()]


@pytest.mark.parametrize(("group", "name", "module"), ROUTES)
def test_command_module_has_the_hooks(group, name, module):
    mod = importlib.import_module(module)
    assert callable(mod.add_arguments) and callable(mod.run), module


@pytest.mark.parametrize(
    ("argv", "expect"),
    [
        (["train", "all", "--help"], "--dataset"),
        (["generate", "--help"], "--route"),
        (["cluster", "up", "--help"], "--bundle-dir"),
        (["cluster", "kill-node", "--help"], "node_id"),
    ],
)
def test_help_lists_the_commands_own_options(argv, expect, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 0
    assert expect in capsys.readouterr().out


def test_unknown_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["frobnicate"])
    assert info.value.code == 2
