"""`sa3`'s parser: one command's module is enough to run it, and the full parser still lists all."""

import pytest

from sa3.cli import COMMANDS, MODULE_OF, build_parser, main


def _commands(parser) -> set[str]:
    return set(parser._subparsers._group_actions[0].choices)


def test_every_command_is_mapped_to_the_module_that_registers_it():
    everything = _commands(build_parser())
    assert everything == set(MODULE_OF), "MODULE_OF must name every command the full parser has"
    for command, module in MODULE_OF.items():
        assert command in _commands(build_parser(module)), f"{module} does not register {command}"
    assert set(MODULE_OF.values()) == set(COMMANDS)


def test_a_typo_gets_the_full_list_of_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["generat", "a prompt"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'generat'" in err and "inpaint" in err and "bench" in err


def test_one_commands_help_works_from_its_own_parser(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["continue", "--help"])
    assert exit_info.value.code == 0
    assert "--bars" in capsys.readouterr().out
