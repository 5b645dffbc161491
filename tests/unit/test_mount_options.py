"""`cloudfs mount -o ...`: which options are cloudfs settings (they override the config
file) and which go to FUSE (cloudfs/commands.py `split_options`, wiring/config.py)."""

from __future__ import annotations

import pytest

from cloudfs.commands import split_options
from wiring.config import bool_option
from wiring.errors import ConfigError


def test_a_true_false_setting_alone_or_with_no_is_a_setting():
    assert bool_option("write_back") == ("write_back", True)
    assert bool_option("nowrite_back") == ("write_back", False)
    assert bool_option("noverify_md5") == ("verify_md5", False)
    for fuse_option in ("noatime", "no", "allow_other", "stop_timeout", "nostop_timeout"):
        assert bool_option(fuse_option) is None, fuse_option


def test_settings_override_fuse_options_pass_the_last_wins():
    settings, fuse = split_options(["noatime,write_back,allow_other",
                                    "nowrite_back,stop_timeout=5"])
    assert settings == {"write_back": False, "stop_timeout": 5.0}
    assert fuse == ["noatime", "allow_other"]
    assert split_options(["write_back=yes"])[0] == {"write_back": True}


def test_a_malformed_setting_is_an_error():
    with pytest.raises(ConfigError, match="write_back"):
        split_options(["write_back=maybe"])
