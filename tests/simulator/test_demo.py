"""The seeded demo job set."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from typing import Any

import httpx
import json5
import pytest

from gateway.model import KNOWN_FUNCTIONS
from gateway.settings import SimulatorSettings
from gateway.simulator import DOC_EXAMPLE_JOB_ID, demo_job_ids
from gateway.simulator.algorithms import ALGORITHMS
from gateway.simulator.demo import QUIRKS, build_demo_jobs
from gateway.simulator.jobs import StaticJob
from tests.simulator.conftest import query_params

OSS_SHANGHAI = re.compile(
    r"oss://[a-z0-9][a-z0-9-]{1,61}[a-z0-9]\.oss-cn-shanghai\.aliyuncs\.com/.+"
)
STATES = {"Queuing", "Analysing", "Success", "Fail"}


@pytest.fixture(scope="module")
def jobs() -> list[StaticJob]:
    return build_demo_jobs(SimulatorSettings().seed)


def honest(jobs: list[StaticJob]) -> list[StaticJob]:
    return [job for job in jobs if job.quirk is None]


def test_every_algorithm_and_every_state(jobs: list[StaticJob]) -> None:
    assert set(ALGORITHMS) == set(KNOWN_FUNCTIONS)
    assert {job.answer["FunctionName"] for job in honest(jobs)} == set(KNOWN_FUNCTIONS)
    assert {job.answer["State"] for job in honest(jobs)} == STATES


def test_ids(jobs: list[StaticJob]) -> None:
    ids = [job.job_id for job in jobs]
    assert len(set(ids)) == len(ids)
    for job in jobs:
        assert re.fullmatch(r"[0-9a-f]{32}", job.job_id)
        assert job.answer["JobId"] == job.job_id


def test_doc_example_is_the_documented_answer(jobs: list[StaticJob]) -> None:
    example = jobs[0]
    assert example.job_id == DOC_EXAMPLE_JOB_ID == "88c6ca184c0e432bbf5b665e2a15d0c1"
    assert example.answer["JobParams"] == '{mode:"gif"}'
    assert example.answer["UserData"] == "null"
    result = json.loads(str(example.answer["Result"]))
    assert json.loads(result["Data"]) == {
        "result": [{"file": "iproduction/test-result.jpg"}, {"file": "iproduction/test-origin.jpg"}]
    }


def test_results_are_double_encoded(jobs: list[StaticJob]) -> None:
    for job in honest(jobs):
        state, result = job.answer["State"], job.answer.get("Result")
        if state in ("Queuing", "Analysing"):
            assert result in (None, "")
            continue
        assert isinstance(result, str)
        decoded = json.loads(result)
        if state == "Fail":
            assert decoded["Code"] != "Success"
            assert decoded["Message"]
            continue
        assert decoded["Code"] == "Success"
        files = [entry["file"] for entry in json.loads(decoded["Data"])["result"]]
        assert files
        for name in files:
            assert not name.startswith(("oss://", "/", "http")), "keys, without bucket"
            assert "{" not in name
        function_name = job.answer["FunctionName"]
        if function_name in ("Cover", "VideoClip"):
            assert len(files) == 3
        if function_name == "CaptionExtraction":
            assert all(name.endswith(".srt") for name in files)


def test_inputs_outputs_params_user_data(jobs: list[StaticJob]) -> None:
    for job in honest(jobs)[1:]:  # the doc example is in cn-hangzhou, as documented
        assert OSS_SHANGHAI.fullmatch(str(job.answer["Input"]))
        output = str(job.answer["Output"])
        assert OSS_SHANGHAI.fullmatch(output)
        assert "{source}" in output
        assert "{timestamp}" in output
        if job.answer["FunctionName"] in ("Cover", "VideoClip"):
            assert "{sequenceId}" in output
    params = [str(job.answer["JobParams"]) for job in honest(jobs)]
    assert '{mode:"gif"}' in params
    for text in params:
        assert isinstance(json5.loads(text), dict)
    user_data = {job.answer["UserData"] for job in honest(jobs)}
    assert "null" in user_data
    assert len(user_data) > 1
    captions = [job for job in honest(jobs) if job.answer["FunctionName"] == "CaptionExtraction"]
    assert len(captions) == 2


def test_quirks_are_labelled(jobs: list[StaticJob]) -> None:
    quirks = {str(job.quirk).split(":")[0]: job for job in jobs if job.quirk}
    assert set(quirks) == set(QUIRKS)
    assert quirks["state-typo"].answer["State"] == "Succes"
    assert quirks["state-unknown"].answer["State"] not in STATES
    with pytest.raises(ValueError, match="Expecting value"):
        json.loads(str(quirks["result-not-json"].answer["Result"]))
    with pytest.raises(ValueError, match="Expecting value"):
        json.loads(json.loads(str(quirks["data-not-json"].answer["Result"]))["Data"])
    assert isinstance(json.loads(str(quirks["data-not-encoded"].answer["Result"]))["Data"], dict)
    with pytest.raises(ValueError, match="Unexpected"):
        json5.loads(str(quirks["params-not-json"].answer["JobParams"]))
    assert "FunctionName" not in quirks["function-missing"].answer
    assert quirks["function-unknown"].answer["FunctionName"] not in KNOWN_FUNCTIONS
    assert str(quirks["output-not-oss"].answer["Output"]).startswith("https://")


def test_seeded_and_deterministic() -> None:
    first = build_demo_jobs(7)
    assert build_demo_jobs(7) == first
    other = build_demo_jobs(8)
    assert other[0] == first[0]  # the doc example does not depend on the seed
    assert {job.job_id for job in other[1:]}.isdisjoint(job.job_id for job in first[1:])


def test_demo_job_ids() -> None:
    settings = SimulatorSettings()
    ids = demo_job_ids(settings)
    every = demo_job_ids(settings, include_quirks=True)
    assert ids[0] == DOC_EXAMPLE_JOB_ID
    assert len(every) == len(ids) + len(QUIRKS)
    assert set(ids) < set(every)


async def test_every_demo_job_answers_the_same_in_json_and_xml(
    client: httpx.AsyncClient, jobs: list[StaticJob]
) -> None:
    for job in jobs:
        response = await client.get("/", params=query_params(job.job_id))
        body: dict[str, Any] = response.json()
        body.pop("RequestId")
        assert body == job.answer
        xml = await client.get("/", params=query_params(job.job_id, Format="XML"))
        root = ET.fromstring(xml.content)
        fields = {child.tag: child.text or "" for child in root if child.tag != "RequestId"}
        assert fields == job.answer


async def test_listing_shows_the_demo_set(client: httpx.AsyncClient, jobs: list[StaticJob]) -> None:
    listing = (await client.get("/_simulator/jobs")).json()["jobs"]
    # Then the moving demo jobs (tests/simulator/test_cycles.py).
    assert [entry["id"] for entry in listing[: len(jobs)]] == [job.job_id for job in jobs]
    assert [entry["source"] for entry in listing[len(jobs) :]] == ["cycling"] * 3
    assert listing[0] == {
        "id": DOC_EXAMPLE_JOB_ID,
        "functionName": "ImageCartoonize",
        "state": "Success",
        "quirk": None,
        "source": "demo",
    }
    assert (
        next(e for e in listing if e["quirk"] and e["quirk"].startswith("function-missing"))[
            "functionName"
        ]
        is None
    )
