"""TiA meta-info XML: round trip, aliases, peers' variants, malformed input."""
from __future__ import annotations

import logging

import pytest

from hil.errors import ProtocolError
from hil.protocols.tia_metainfo import (FLAGS, MetaInfo, SignalInfo, canonical_type,
                                        decode_metainfo, encode_metainfo, type_flag)

SPEC_EXAMPLE = b"""<?xml version="1.0" encoding="UTF-8"?>
<tiaMetaInfo version="1.0">
  <subject id="sim" firstName="" surname=""/>
  <masterSignal samplingRate="1000" blockSize="4"/>
  <signal type="eeg" samplingRate="1000" blockSize="4" numChannels="2">
    <channel nr="1" label="C3"/>
    <channel nr="2" label="C4"/>
  </signal>
  <signal type="emg" samplingRate="1000" blockSize="4" numChannels="1">
    <channel nr="1" label="EMG1"/>
  </signal>
</tiaMetaInfo>"""

# What pytia 0.1.0 sends: no declaration, master listed first, trailing blank lines.
PYTIA_EXAMPLE = b"""<tiaMetaInfo version="1.0">
<subject id="subject0" firstName="ABC" surname="DEF"/>
<masterSignal samplingRate="100" blockSize="1"/>
<signal type="user_2" samplingRate="100" blockSize="1" numChannels="2">
<channel nr="1" label="channel1"/>
<channel nr="2" label="channel2"/>
</signal>
<signal type="user_1" samplingRate="100" blockSize="1" numChannels="1">
<channel nr="1" label="channel1"/>
</signal>
</tiaMetaInfo>

"""


def test_spec_example():
    meta = decode_metainfo(SPEC_EXAMPLE)
    assert [s.type for s in meta.signals] == ["eeg", "emg"]
    assert meta.signal("eeg").channels == ("C3", "C4")
    assert (meta.master_rate, meta.master_block, meta.packet_rate) == (1000, 4, 250)
    assert meta.flags == 0x3 and meta.master == "eeg"


def test_pytia_example_orders_by_flag_and_remembers_the_master():
    meta = decode_metainfo(PYTIA_EXAMPLE)
    assert [s.type for s in meta.signals] == ["user_1", "user_2"]
    assert meta.master == "user_2"
    assert meta.subject["firstName"] == "ABC"


def test_round_trip_with_escaped_labels():
    meta = MetaInfo((SignalInfo("emg", 500.0, 4, ("a\"b", "<c>", "Ω")),
                     SignalInfo("eeg", 500.0, 4, ("C3",))), 500.0, 4, {"id": "x & y"})
    for decl in (False, True):
        back = decode_metainfo(encode_metainfo(meta, declaration=decl))
        assert back == meta


@pytest.mark.parametrize("name, canon", [("EEG", "eeg"), ("user1", "user_1"), ("User_3", "user_3"),
                                         ("sensor", "sensors"), ("Mouse_Button", "mouse-button"),
                                         ("axes", "joystick"), ("keycode", "button"),
                                         ("brainwaves", None)])
def test_aliases_case_insensitive(name, canon):
    assert canonical_type(name) == canon


def test_flags_table_matches_spec():
    assert FLAGS["eeg"] == 1 and FLAGS["mouse-button"] == 0x1000 and FLAGS["event"] == 0x200000
    assert type_flag("USER4") == 0x80000
    with pytest.raises(ProtocolError):
        type_flag("nope")


def test_unknown_signal_type_is_logged_and_skipped(caplog):
    xml = SPEC_EXAMPLE.replace(b'type="emg"', b'type="telepathy"')
    with caplog.at_level(logging.WARNING):
        meta = decode_metainfo(xml)
    assert [s.type for s in meta.signals] == ["eeg"]
    assert "telepathy" in caplog.text


def test_missing_channel_elements_get_default_labels_and_extra_attributes_are_ignored():
    meta = decode_metainfo(b'<tiaMetaInfo version="1.0"><subject id="s" lastName="x" handedness="r"/>'
                           b'<signal type="user1" samplingRate="10" blockSize="1" numChannels="2"/>'
                           b'</tiaMetaInfo>')
    assert meta.signal("user_1").channels == ("user_11", "user_12")
    assert meta.master_rate == 10      # no masterSignal: the first signal paces


@pytest.mark.parametrize("xml, field", [
    (b"<tiaMetaInfo><signal", "xml"),
    (b"not xml at all", "xml"),
    (b"<other/>", "tiaMetaInfo"),
    (b'<tiaMetaInfo><signal type="eeg" blockSize="1" numChannels="1"/></tiaMetaInfo>',
     "samplingRate"),
    (b'<tiaMetaInfo><signal type="eeg" samplingRate="x" blockSize="1" numChannels="1"/>'
     b'</tiaMetaInfo>', "samplingRate"),
    (b'<tiaMetaInfo><signal type="eeg" samplingRate="1" blockSize="1.5" numChannels="1"/>'
     b'</tiaMetaInfo>', "blockSize"),
    (b'<tiaMetaInfo><signal type="eeg" samplingRate="1" blockSize="1" numChannels="1">'
     b'<channel nr="3" label="x"/></signal></tiaMetaInfo>', "nr"),
    (b'<tiaMetaInfo><signal samplingRate="1" blockSize="1" numChannels="1"/></tiaMetaInfo>',
     "type"),
    (b'<tiaMetaInfo><signal type="eeg" samplingRate="1" blockSize="1" numChannels="1"/>'
     b'<signal type="EEG" samplingRate="1" blockSize="1" numChannels="1"/></tiaMetaInfo>', "type"),
])
def test_malformed_metainfo_names_the_field(xml, field):
    with pytest.raises(ProtocolError) as info:
        decode_metainfo(xml)
    assert info.value.field == field
