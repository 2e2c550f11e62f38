"""The shipped catalogue: ids of the issue exist, the ATLAS subset is reproducible, attribution."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest
import yaml

from mlwarden.risk import load_catalogue, load_rules
from mlwarden.risk.extract_atlas import dump, extract, main, trim_description

# The published ATLAS data lives in the shared folder beside the checkout (../shared).
SHARED_ATLAS = (
    Path(__file__).resolve().parents[3] / "shared" / "data" / "mitre-atlas" / "ATLAS.yaml"
)
DATA = resources.files("mlwarden.risk").joinpath("data")


@pytest.mark.parametrize(
    ("entry_id", "name"),
    [
        ("AML.T0010.003", "Model"),
        ("AML.T0018.000", "Poison AI Model"),
        ("AML.T0024.000", "Infer Training Data Membership"),
        ("AML.T0024.002", "Extract AI Model"),
        ("AML.T0015", "Evade AI Model"),
        ("AML.T0029", "Denial of AI Service"),
        ("AML.T0044", "Full AI Model Access"),
        ("AML.T0020", "Poison Training Data"),
        ("AML.M0014", "Verify AI Artifacts"),
        ("AML.M0004", "Restrict Number of AI Model Queries"),
        ("AML.M0015", "Adversarial Input Detection"),
        ("ML05", "Model Theft"),
        ("NCSC-4.1", "Understand and mitigate the risks of using continual learning"),
    ],
)
def test_catalogue_has_the_ids_of_the_issue(entry_id: str, name: str) -> None:
    assert load_catalogue().name_of(entry_id) == name


def test_catalogue_has_all_of_owasp_ml_top_10_and_ncsc_stages() -> None:
    cat = load_catalogue()
    assert sorted(cat.owasp) == [f"ML{i:02d}" for i in range(1, 11)]
    assert {p.stage for p in cat.ncsc.values()} == {
        "design",
        "development",
        "deployment",
        "operation",
        "end-of-life",
    }
    assert cat.technique_label("AML.T0010.003") == "AI Supply Chain Compromise: Model"


def test_every_id_in_the_rules_exists_in_the_catalogue() -> None:
    cat, rules = load_catalogue(), load_rules()
    assert rules.problems(cat) == []
    missing = sorted(i for i in rules.all_ids() if cat.framework_of(i) is None)
    assert missing == []
    for threat in rules.threats:
        assert all(cat.framework_of(a) == "atlas-technique" for a in threat.atlas), threat.id
        assert all(cat.framework_of(c) == "atlas-mitigation" for c in threat.controls), threat.id


def test_every_control_is_an_atlas_mitigation_of_its_threat() -> None:
    """ATLAS itself lists each control against the threat's technique (or its parent)."""
    cat, rules = load_catalogue(), load_rules()
    for threat in rules.threats:
        for control in threat.controls:
            assert any(cat.mitigates(control, a) for a in threat.atlas), (threat.id, control)


@pytest.mark.skipif(not SHARED_ATLAS.is_file(), reason="published ATLAS.yaml not available")
def test_atlas_subset_is_reproducible_from_the_published_data() -> None:
    # the C safe loader only to keep the test fast; the script itself uses yaml.safe_load
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    published = yaml.load(SHARED_ATLAS.read_text(encoding="utf-8"), Loader=loader)  # noqa: S506
    shipped = DATA.joinpath("atlas.yaml").read_text(encoding="utf-8")
    assert dump(extract(published)) == shipped
    matrix = published["matrices"][0]
    ids = {t["id"] for t in matrix["techniques"]} | {m["id"] for m in matrix["mitigations"]}
    cat = load_catalogue()
    assert set(cat.techniques) | set(cat.mitigations) <= ids


def test_extract_script_writes_the_subset(tmp_path: Path) -> None:
    source, out = tmp_path / "ATLAS.yaml", tmp_path / "atlas.yaml"
    source.write_text(yaml.safe_dump(TINY_ATLAS), encoding="utf-8")
    assert main([str(source), "-o", str(out)]) == 0
    written = out.read_text(encoding="utf-8")
    assert written.startswith("# MITRE ATLAS subset") and "Apache" in written.splitlines()[2]
    assert yaml.safe_load(written)["techniques"][0]["id"] == "AML.T0001"


TINY_ATLAS: dict = {
    "name": "ATLAS",
    "version": "9.9",
    "matrices": [
        {
            "tactics": [{"id": "AML.TA0001", "name": "Staging", "description": "Short."}],
            "techniques": [
                {
                    "id": "AML.T0001",
                    "name": "Parent",
                    "description": "See [x](/t/AML.T2). More.",
                    "tactics": ["AML.TA0001"],
                    "maturity": "realized",
                },
                {
                    "id": "AML.T0001.000",
                    "name": "Child",
                    "description": "A" * 400,
                    "subtechnique-of": "AML.T0001",
                },
            ],
            "mitigations": [
                {
                    "id": "AML.M0001",
                    "name": "Fix",
                    "description": "Do it.",
                    "techniques": [
                        {"id": "AML.T0001.000", "use": "u"},
                        {"id": "AML.T0001", "use": "v"},
                    ],
                    "ml-lifecycle": ["Deployment", {"id": "stray"}],
                }
            ],
        }
    ],
}


def test_extract_keeps_relations_and_trims_text() -> None:
    atlas = TINY_ATLAS
    subset = extract(atlas)
    parent, child = subset["techniques"]
    assert parent["description"] == "See x."
    assert child["parent"] == "AML.T0001" and len(child["description"]) <= 280
    mitigation = subset["mitigations"][0]
    assert mitigation["techniques"] == ["AML.T0001", "AML.T0001.000"]
    assert mitigation["lifecycle"] == ["Deployment"]
    assert dump(subset) == dump(extract(atlas))  # deterministic


def test_trim_description_cuts_at_first_sentence() -> None:
    assert trim_description("One thing. Two things.") == "One thing."
    assert trim_description("e.g. a [link](http://x) here") == "e.g. a link here"


def test_atlas_attribution_is_shipped() -> None:
    licence = DATA.joinpath("ATLAS-LICENSE.md").read_text(encoding="utf-8")
    assert "Apache License" in licence and "MITRE" in licence
    readme = DATA.joinpath("README.md").read_text(encoding="utf-8")
    assert "8ee2c689a7d3c65ddf2bfe4950a4f3ecffa6f48b" in readme
    assert load_catalogue().atlas_source.version == "5.6.0"
