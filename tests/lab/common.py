"""What the lab tests share: one quick run of an experiment, and the checks of the files it writes."""

import json

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run_quick(name, tmp_path_factory):
    out = tmp_path_factory.mktemp(name)
    said = []
    from kerascnn.lab import run_experiment

    result = run_experiment(name, out, quick=True, say=said.append)
    return out, result, said


def check_files(out, name, result, said):
    data = json.loads((out / f"{name}.json").read_text())
    assert data == result
    assert (out / f"{name}.png").read_bytes()[:8] == PNG_SIGNATURE
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left
    assert said == [result["verdict"]]
    assert result["verdict"].startswith(f"{name}: ")
    assert result["budget"]["mode"] == "quick"
    assert result["budget"]["what"]
