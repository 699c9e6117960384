"""The diffusion profile: one pattern (typed sections, ``Literal`` choices checked on
construction, JSON round trip) with the digests of work folders written before the
architecture change (issue 14)."""

from __future__ import annotations

import json

import pytest

from helioforge.config import Settings
from helioforge.diffusion.config import (
    AIADataConfig,
    AugmentConfig,
    ClassifierConfig,
    DiffusionProfile,
    DiffusionTrainConfig,
    FeatureConfig,
    SampleConfig,
    get_diffusion_profile,
)

SECTIONS = ("data", "unet", "train", "sample", "features", "classifier", "evaluate", "augment")

#: ``DiffusionProfile.digest`` of every section of every profile, computed on the code before the
#: architecture change (commit 20472ee, the config classes still in augment/classifier/features):
#: a stored work folder stays current only if these do not change.
GOLDEN_DIGESTS = {
    "paper": {"data": "a03c7ccdb527", "unet": "94186b2781ab", "train": "c3303b7d1b0a", "sample": "2ec827c31c61",
              "features": "df68dfe440bd", "classifier": "dd41b4164d11", "evaluate": "fc3a4beeda4b",
              "augment": "f47d8b59c051", "unet+train": "8410c06d282d", "data_dropped": "70a8f9a53d4d",
              "all": "a780ad9be747"},
    "cpu": {"data": "300bc6d5f7c5", "unet": "602da43f69a7", "train": "2a8da2e0b8fa", "sample": "9e2ea601df82",
            "features": "df68dfe440bd", "classifier": "dd41b4164d11", "evaluate": "da828550f854",
            "augment": "5f11bb2332e5", "unet+train": "2fa8d5210f18", "data_dropped": "2ad3b9b59bae",
            "all": "d1d7eef4da0f"},
    "tiny": {"data": "0c8b3de39dc4", "unet": "12592defd971", "train": "f1297afb3d8b", "sample": "10d9743e80e2",
             "features": "451f490325fc", "classifier": "59e0d33aafed", "evaluate": "69151a136d61",
             "augment": "d304ad3c47c0", "unet+train": "6055e60ddc6f", "data_dropped": "60bfa5dfbc61",
             "all": "d40b045d9c8e"},
}


@pytest.mark.parametrize("name", sorted(GOLDEN_DIGESTS))
def test_digests_unchanged(name):
    p = get_diffusion_profile(name)
    got = {s: p.digest(s) for s in SECTIONS}
    got["unet+train"] = p.digest("unet", "train", extra="x")  # the model step's digest, dataset digest "x"
    got["data_dropped"] = p.digest("data", extra=[[], []], drop=("data.images", "data.events", "data.flux"))
    got["all"] = p.digest(*SECTIONS)
    assert got == GOLDEN_DIGESTS[name]


@pytest.mark.parametrize("name", ["paper", "cpu", "tiny"])
def test_json_round_trip(name):
    p = get_diffusion_profile(name)
    assert DiffusionProfile.from_json(p.to_json()) == p
    assert json.loads(p.to_json())["augment"]["classifier"]["flips"] is False


def test_every_section_is_a_settings_dataclass():
    p = get_diffusion_profile("tiny")
    for s in SECTIONS:
        assert isinstance(getattr(p, s), Settings), s


@pytest.mark.parametrize("make, field, value", [
    (lambda v: SampleConfig(sampler=v), "sampler", "euler"),
    (lambda v: DiffusionTrainConfig(condition=v), "condition", "magnetogram"),
    (lambda v: DiffusionTrainConfig(beta_schedule=v), "beta_schedule", "cosine"),
    (lambda v: AIADataConfig(label_source=v), "label_source", "hek"),
    (lambda v: AugmentConfig(loss_weights=v), "loss_weights", "inverse"),
])
def test_string_choices_checked_on_construction(make, field, value):
    with pytest.raises(ValueError, match=rf"\.{field} must be one of .*got '{value}'"):
        make(value)


def test_bad_choice_in_a_stored_profile_is_refused():
    d = get_diffusion_profile("tiny").to_dict()
    d["sample"]["sampler"] = "euler"
    with pytest.raises(ValueError, match="SampleConfig.sampler"):
        DiffusionProfile.from_dict(d)


def test_section_checks_kept():
    with pytest.raises(ValueError, match="context_mask_fraction"):
        FeatureConfig(context_mask_fraction=1.0)
    assert AugmentConfig().classifier == ClassifierConfig(flips=False)
