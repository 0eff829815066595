"""ERP resource id -> MM erpMachineId: identity, normalisation, overrides, ignore list."""

from __future__ import annotations

import pytest

from erpsync.config import MachineSettings
from erpsync.domain.errors import ConfigError
from erpsync.domain.machines import MachineMapper


def test_default_is_identity_after_trimming() -> None:
    mapper = MachineMapper()
    assert mapper.normalize == "trim"
    assert mapper.map("HAAS VF2") == "HAAS VF2"
    assert mapper.map("  F FOIL MILL #1 ") == "F FOIL MILL #1"
    assert mapper.map("haas vf2") == "haas vf2"  # case is kept


def test_exact_keeps_padding() -> None:
    mapper = MachineMapper(normalize="exact")
    assert mapper.map(" M1 ") == " M1 "
    assert mapper.map("M1") == "M1"


def test_trim_casefold_makes_one_machine_of_spellings() -> None:
    mapper = MachineMapper(normalize="trim-casefold")
    assert mapper.map("MILL 1 ") == mapper.map(" mill 1") == "mill 1"
    assert mapper.map("STRASSE") == mapper.map("straße")


@pytest.mark.parametrize("normalize", ["exact", "trim", "trim-casefold"])
@pytest.mark.parametrize("blank", ["", " ", "\t \n"])
def test_blank_maps_to_none_in_every_mode(normalize: str, blank: str) -> None:
    mapper = MachineMapper(normalize=normalize)  # type: ignore[arg-type]
    assert mapper.map(blank) is None
    assert mapper.is_blank(blank)


def test_overrides_are_matched_after_normalisation() -> None:
    mapper = MachineMapper(normalize="trim-casefold", overrides={" Haas 3": " haas-03-mm "})
    assert mapper.map("HAAS 3") == "haas-03-mm"  # value sent verbatim, only trimmed
    assert mapper.map("haas 3   ") == "haas-03-mm"
    assert mapper.map("HAAS 4") == "haas 4"


def test_override_under_trim_keeps_case_sensitivity() -> None:
    mapper = MachineMapper(overrides={"M1": "MILL-1"})
    assert mapper.map(" M1 ") == "MILL-1"
    assert mapper.map("m1") == "m1"


def test_exact_overrides_need_the_exact_id() -> None:
    mapper = MachineMapper(normalize="exact", overrides={"M1 ": "MILL-1"})
    assert mapper.map("M1 ") == "MILL-1"
    assert mapper.map("M1") == "M1"


def test_ignore_list_is_normalised_and_maps_to_none() -> None:
    mapper = MachineMapper(normalize="trim-casefold", ignore=["Saw ", "DEBURR"])
    assert mapper.map(" SAW") is None
    assert mapper.map("deburr") is None
    assert mapper.is_ignored("saw")
    assert not mapper.is_ignored("M1")
    assert mapper.map("M1") == "m1"


def test_ignore_wins_over_an_override() -> None:
    mapper = MachineMapper(overrides={"SAW": "saw-1"}, ignore=["SAW"])
    assert mapper.map("SAW") is None


def test_key_is_the_normalised_id() -> None:
    assert MachineMapper(normalize="trim-casefold").key("  AbC ") == "abc"
    assert MachineMapper(normalize="exact").key(" AbC ") == " AbC "


def test_from_settings_reads_the_machines_section() -> None:
    settings = MachineSettings(normalize="trim-casefold", overrides={"Lathe 2": "LATHE-02"}, ignore=["saw"])
    mapper = MachineMapper.from_settings(settings)
    assert mapper.normalize == "trim-casefold"
    assert mapper.map("LATHE 2") == "LATHE-02"
    assert mapper.map("SAW") is None


def test_from_default_settings_is_trim_identity() -> None:
    mapper = MachineMapper.from_settings(MachineSettings())
    assert mapper.map(" X ") == "X"


def test_unknown_mode_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"machines\.normalize"):
        MachineMapper(normalize="lower")  # type: ignore[arg-type]


def test_blank_override_target_is_a_config_error_pointing_at_ignore() -> None:
    with pytest.raises(ConfigError, match=r"machines\.ignore"):
        MachineMapper(overrides={"M1": "  "})


def test_blank_override_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="blank"):
        MachineMapper(overrides={" ": "M1"})


def test_overrides_that_collide_after_normalisation_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match="same resource"):
        MachineMapper(normalize="trim-casefold", overrides={"M1": "A", "m1 ": "B"})


def test_overrides_that_collide_to_the_same_target_are_fine() -> None:
    mapper = MachineMapper(normalize="trim-casefold", overrides={"M1": "A", "m1 ": "A"})
    assert mapper.map("M1") == "A"
