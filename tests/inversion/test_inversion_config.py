"""All inversion profiles in one place (helioforge.inversion.config; issue 14): typed sections
with ``Literal`` choices checked on construction, a JSON round trip, and digests unchanged by the
move (work folders and training sets made before stay valid)."""

from __future__ import annotations

import pytest

from helioforge.inversion.config import (SICON_PROFILES, TRAINSET_PROFILES, SiconConfig, SiconModelConfig,
                                         SiconTrainConfig, TrainsetConfig, TrainsetProfile, get_sicon_profile,
                                         get_trainset_profile)

#: Digests of every profile on commit 20472ee, before the SICON profiles moved out of training.py.
KNOWN_TRAINSET_DIGESTS = {"paper": "dafa2069f490", "cpu": "94873e16a206", "tiny": "ec0f5e43ab89"}
KNOWN_SICON_DIGESTS = {"paper": "dc21ac898af3", "paper-concat": "4b89e2ff629c", "cpu": "bd7461acfe5f",
                       "tiny": "a6a428cd23b5"}


def test_profile_digests_are_unchanged():
    # synthesis_kernel="torch" is left out of a set's digest (make_trainset), as here
    assert {n: get_trainset_profile(n).digest("trainset", "grid", "atmosphere", drop=("trainset.synthesis_kernel",))
            for n in TRAINSET_PROFILES} == KNOWN_TRAINSET_DIGESTS
    assert {n: get_sicon_profile(n).digest("model", "train") for n in SICON_PROFILES} == KNOWN_SICON_DIGESTS


@pytest.mark.parametrize("name", sorted(SICON_PROFILES))
def test_sicon_profiles_round_trip(name):
    p = get_sicon_profile(name)
    assert SiconConfig.from_json(p.to_json()) == p
    assert isinstance(p.model, SiconModelConfig) and isinstance(p.train, SiconTrainConfig)


def test_string_choices_are_checked_on_construction():
    with pytest.raises(ValueError, match="unknown network 'unet'"):
        SiconModelConfig(network="unet")
    with pytest.raises(ValueError, match="scaler"):
        SiconTrainConfig(scaler="minmax")
    with pytest.raises(ValueError, match="spectral_quadrature"):
        TrainsetConfig(spectral_quadrature="simpson")
    with pytest.raises(ValueError, match="network"):  # a misspelt choice in a saved profile is refused on reading
        SiconConfig.from_dict({**get_sicon_profile("tiny").to_dict(), "model": {"network": "encoder"}})
    assert TrainsetProfile.from_json(get_trainset_profile("tiny").to_json()) == get_trainset_profile("tiny")
