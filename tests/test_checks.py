"""The one validation module: each check's conversions and its messages, word for word."""

import argparse
import pickle

import numpy as np
import pytest

from captum_realtime_mask import _checks as check
from captum_realtime_mask.errors import CheckpointError, InputError


@pytest.mark.parametrize(
    "value, low, kwargs, expected",
    [
        (np.int64(3), 1, {}, 3),
        (0, 0, {}, 0),
        (None, 1, {"none_ok": True}, None),
        (-5, None, {}, -5),
    ],
)
def test_integer_accepts_and_converts(value, low, kwargs, expected):
    got = check.integer(value, "n", low, **kwargs)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(
    "value, low, kwargs, message",
    [
        (0, 1, {}, "epochs: expected a positive int, got int 0."),
        (
            True,
            1,
            {},
            "epochs: expected a positive int, got bool True. Hint: pass a number, "
            "e.g. epochs=1 (a bool is no count).",
        ),  # fmt: skip
        (1.0, 0, {}, "epochs: expected an int >= 0, got float 1.0."),
        (
            "2",
            1,
            {"none_ok": True},
            "epochs: expected a positive int or None, got str '2'.",
        ),
        (
            None,
            2,
            {"hint": "Hint: h."},
            "epochs: expected an int >= 2, got NoneType None. Hint: h.",
        ),
    ],
)
def test_integer_refuses_with_one_message(value, low, kwargs, message):
    with pytest.raises(InputError) as info:
        check.integer(value, "epochs", low, **kwargs)
    assert str(info.value) == message
    assert info.value.argument == "epochs"


def test_real_ranges_and_messages():
    assert check.real(np.float32(0.5), "t", 0, 1) == 0.5
    assert check.real(1, "t", 0, 1) == 1.0 and type(check.real(1, "t")) is float
    assert check.real(None, "t", none_ok=True) is None
    assert check.real(float("inf"), "t", finite=False) == float("inf")
    cases = {
        (0, "lr", 0, None, True): "lr: expected a finite real number > 0, got int 0.",
        (-1, "w", 0, None, False): "w: expected a finite real number >= 0, got int -1.",
        (1.5, "p", 0, 1, False): "p: expected a real number in [0, 1], got float 1.5.",
        (0, "p", 0, 1, True): "p: expected a real number in (0, 1], got int 0.",
        (
            float("nan"),
            "x",
            None,
            None,
            False,
        ): "x: expected a finite real number, got float nan.",
        (
            True,
            "x",
            None,
            None,
            False,
        ): "x: expected a finite real number, got bool True.",
        (
            "1",
            "x",
            None,
            2,
            False,
        ): "x: expected a finite real number <= 2, got str '1'.",
    }
    for (value, name, low, high, low_open), message in cases.items():
        with pytest.raises(InputError) as info:
            check.real(value, name, low, high, low_open=low_open)
        assert str(info.value) == message


def test_flag_one_of_path_and_size():
    assert check.flag(np.bool_(False), "amp") is False
    with pytest.raises(InputError, match=r"^amp: expected True or False, got int 1\.$"):
        check.flag(1, "amp")
    assert check.one_of("cosine", "s", ("constant", "cosine")) == "cosine"
    with pytest.raises(InputError, match=r"^s: expected one of 'a' or 'b', got a list of 1 items"):
        check.one_of(["a"], "s", ("a", "b"))
    with pytest.raises(InputError, match="expected one of 1 or 2, got bool True"):
        check.one_of(True, "k", (1, 2))  # True == 1, but a bool is not the int 1
    assert check.path_str(__import__("pathlib").Path("a/b"), "d", "x") == "a/b"
    with pytest.raises(
        InputError, match=r"^d: expected a path .* got int 3\. Hint: pass e\.g\. d='x'"
    ):
        check.path_str(3, "d", "x")
    assert check.size_pair(np.int64(4), "s") == (4, 4)
    with pytest.raises(InputError, match="^s: must be a positive int or a"):
        check.size_pair((4, 0), "s")


def test_argparse_type_turns_a_check_into_a_usage_error():
    positive = check.argparse_type(int, check.integer, low=1)
    unit = check.argparse_type(float, check.real, low=0, high=1)
    assert positive("3") == 3 and unit("0.25") == 0.25
    for convert, text, message in (
        (positive, "0", "expected a positive int, got int 0."),
        (positive, "x", "expected an integer, got 'x'"),
        (unit, "2", "expected a real number in [0, 1], got float 2.0."),
        (unit, "nan", "expected a real number in [0, 1], got float nan."),
    ):
        with pytest.raises(argparse.ArgumentTypeError) as info:
            convert(text)
        assert str(info.value) == message
    parser = argparse.ArgumentParser(prog="p", exit_on_error=False)
    parser.add_argument("--epochs", type=positive)
    with pytest.raises(argparse.ArgumentError, match="expected a positive int, got int 0"):
        parser.parse_args(["--epochs", "0"])


@pytest.mark.parametrize("kind", [InputError, CheckpointError])
def test_errors_name_their_argument_or_none(kind):
    named, plain = kind("no config.json.", argument="directory"), kind("broken.")
    assert (str(named), named.argument, named.detail) == (
        "directory: no config.json.",
        "directory",
        "no config.json.",
    )
    assert (str(plain), plain.argument, plain.detail) == ("broken.", None, "broken.")


def test_input_errors_keep_their_argument_through_pickling():
    err = InputError("expected a positive int, got int 0.", argument="epochs")
    again = pickle.loads(pickle.dumps(err))
    assert (again.argument, again.detail, str(again)) == (
        "epochs",
        "expected a positive int, got int 0.",
        "epochs: expected a positive int, got int 0.",
    )
