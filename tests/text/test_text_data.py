"""Text data files: what is read, and the clear error for each bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlwarden.core.errors import DataError, ParameterError
from mlwarden.io import check_token_lengths, load_text_data


def write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def jsonl(path: Path, records: list[dict]) -> Path:
    return write(path, "".join(json.dumps(r) + "\n" for r in records))


def test_jsonl_csv_and_tsv_read_the_same_rows(tmp_path):
    records = [{"text": "good, \"really\" good", "label": "pos"}, {"text": "bad", "label": "neg"}]
    a = load_text_data(jsonl(tmp_path / "a.jsonl", records))
    csv_text = 'text,label\n"good, ""really"" good",pos\nbad,neg\n'
    tsv_text = 'text\tlabel\ngood, "really" good\tpos\nbad\tneg\n'
    b = load_text_data(write(tmp_path / "b.csv", csv_text))
    c = load_text_data(write(tmp_path / "c.tsv", tsv_text))
    for data in (a, b, c):
        assert data.texts == ('good, "really" good', "bad")
        assert data.class_names == ("neg", "pos") and data.labels.tolist() == [1, 0]


def test_column_names_class_names_and_integer_labels(tmp_path):
    path = jsonl(tmp_path / "d.jsonl", [{"review": "fine", "y": 1}, {"review": "meh", "y": 0}])
    data = load_text_data(path, text_column="review", label_column="y",
                          class_names=("negative", "positive"))
    assert data.labels.tolist() == [1, 0] and data.class_names == ("negative", "positive")
    named = jsonl(tmp_path / "e.jsonl", [{"text": "x", "label": "positive"}])
    assert load_text_data(named, class_names=("negative", "positive")).labels.tolist() == [1]
    assert load_text_data(path, text_column="review", label_column="y").class_names == ("0", "1")
    unlabelled = load_text_data(path, text_column="review", label_column=None)
    assert unlabelled.labels is None and len(unlabelled) == 2


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bytes.csv", b"text,label\ncaf\xe9,pos\n", r"not UTF-8: line 2, byte 14 \(0xe9\)"),
        ("empty.jsonl", '{"text": "ok", "label": 0}\n{"text": "  ", "label": 1}\n',
         "line 2: the text is empty"),
        ("empty.csv", "text,label\n,1\n", "line 2: the text is empty"),
        ("nottext.jsonl", '{"text": 5, "label": 0}\n', "the text is a int, not a string"),
        ("badjson.jsonl", '{"text": "a", "label": 0}\n{"text": \n', "line 2 is not JSON"),
        ("list.jsonl", '["a", 0]\n', "line 1 is a JSON list, not an object"),
        ("nofield.jsonl", '{"body": "a", "label": 0}\n', "no field 'text'; its fields are 'body'"),
        ("nocol.csv", "body,label\na,0\n", "no column 'text'; its columns are 'body', 'label'"),
        ("ragged.tsv", "text\tlabel\na\t0\textra\n", "line 2 has 3 cells; the header has 2"),
        ("nolabel.jsonl", '{"text": "a", "label": null}\n', "the label is a NoneType"),
        ("nothing.jsonl", "\n\n", "holds no rows"),
        ("blank.csv", "", "is empty"),
        ("data.parquet", "x", "unknown text data format '.parquet'"),
    ],
)
def test_bad_inputs_get_one_clear_error(tmp_path, name, content, message):
    with pytest.raises(DataError, match=message):
        load_text_data(write(tmp_path / name, content))


def test_labels_outside_the_class_names(tmp_path):
    path = jsonl(tmp_path / "l.jsonl", [{"text": "a", "label": "positive"},
                                       {"text": "b", "label": "neutral"}])
    with pytest.raises(DataError, match=r"line 2: label 'neutral' is not one of the classes "
                                        r"negative, positive \(or an index 0..1\)"):
        load_text_data(path, class_names=("negative", "positive"))
    ints = jsonl(tmp_path / "i.jsonl", [{"text": "a", "label": 2}])
    with pytest.raises(DataError, match="label 2 is not one of the classes"):
        load_text_data(ints, class_names=("negative", "positive"))


def test_over_long_texts_are_refused_by_characters(tmp_path):
    path = jsonl(tmp_path / "long.jsonl", [{"text": "x" * 1_000_001, "label": 0}])
    with pytest.raises(DataError, match="1000001 characters, over the limit of 100000"):
        load_text_data(path)
    assert len(load_text_data(path, max_chars=2_000_000).texts[0]) == 1_000_001
    with pytest.raises(ParameterError, match="max_chars"):
        load_text_data(path, max_chars=0)


def test_missing_source_and_plain_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_text_data(tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match="not one saved by datasets' save_to_disk"):
        load_text_data(tmp_path)


def test_token_lengths_against_a_text_model(tmp_path, minilm):
    records = [{"text": "short", "label": 0}, {"text": "word " * 300, "label": 1}]
    data = load_text_data(jsonl(tmp_path / "t.jsonl", records))
    assert check_token_lengths(data, minilm) == 1  # truncated to 256 tokens by the model
    with pytest.raises(DataError, match=r"1 text\(s\) exceed the model's 256 tokens .*row 2, "
                                        r"302 tokens"):
        check_token_lengths(data, minilm, overlong="error")


def test_text_only_code_refuses_a_tensor_model(tmp_path, digits_cnn):
    data = load_text_data(jsonl(tmp_path / "t.jsonl", [{"text": "a", "label": 0}]))
    with pytest.raises(ParameterError, match="checking text lengths needs .*text inputs; "
                                             "'.*' is a white-box classifier"):
        check_token_lengths(data, digits_cnn)


def test_a_folder_saved_by_datasets(tmp_path):
    datasets = pytest.importorskip("datasets")
    features = datasets.Features(
        {"text": datasets.Value("string"),
         "label": datasets.ClassLabel(names=["negative", "positive"])}
    )
    train = datasets.Dataset.from_dict({"text": ["fine", "awful"], "label": [1, 0]},
                                       features=features)
    train.save_to_disk(str(tmp_path / "one"))
    data = load_text_data(tmp_path / "one")
    assert data.class_names == ("negative", "positive") and data.labels.tolist() == [1, 0]
    datasets.DatasetDict({"train": train, "test": train}).save_to_disk(str(tmp_path / "two"))
    with pytest.raises(DataError, match="holds the splits test, train; choose one with split="):
        load_text_data(tmp_path / "two")
    assert load_text_data(tmp_path / "two", split="test").texts == ("fine", "awful")
