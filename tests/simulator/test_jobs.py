"""Submitted jobs and their lifecycle (on a clock moved by hand), queries, and planted jobs."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from gateway.mps.signing import RpcSignatureV1
from gateway.simulator import DOC_EXAMPLE_JOB_ID
from tests.simulator.conftest import (
    AK,
    EPOCH,
    SECRET,
    ManualClock,
    query_params,
    simulator_of,
    submit_params,
)

IN = "oss://media-in.oss-cn-shanghai.aliyuncs.com"
OUT = "oss://media-out.oss-cn-shanghai.aliyuncs.com"


async def submit(client: httpx.AsyncClient, function_name: str, **params: str) -> str:
    response = await client.post("/", data=submit_params(function_name, **params))
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"RequestId", "JobId", "Result"}
    assert json.loads(body["Result"]) == {
        "Code": "Success",
        "Details": [],
        "FunctionName": function_name,
        "JobId": body["JobId"],
        "Message": "success",
        "State": "Success",
        "Type": "IProduction",
    }
    job_id: str = body["JobId"]
    return job_id


async def query(client: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    response = await client.get("/", params=query_params(job_id))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body.pop("RequestId")
    return body


def files_of(job: dict[str, Any]) -> list[str]:
    result = json.loads(job["Result"])
    assert result["Code"] == "Success"
    assert result["Message"] == "Successful."
    return [entry["file"] for entry in json.loads(result["Data"])["result"]]


async def test_lifecycle_to_success(client: httpx.AsyncClient, clock: ManualClock) -> None:
    # Default settings: 2 s Queuing, 5 s Analysing.
    job_id = await submit(
        client,
        "Cover",
        Input=f"{IN}/videos/Launch Day.final.mp4",
        Output=f"{OUT}/covers/{{source}}-{{timestamp}}-{{sequenceId}}.jpg",
        JobParams="{}",
        UserData='{"orderId":"A1"}',
        PipelineId="39f8e0bc005e4f309379701645f40001",
    )
    queuing = await query(client, job_id)
    assert queuing == {
        "JobId": job_id,
        "FunctionName": "Cover",
        "State": "Queuing",
        "Input": f"{IN}/videos/Launch Day.final.mp4",
        "Output": f"{OUT}/covers/{{source}}-{{timestamp}}-{{sequenceId}}.jpg",
        "PipelineId": "39f8e0bc005e4f309379701645f40001",
        "JobParams": "{}",
        "UserData": '{"orderId":"A1"}',
    }
    clock.advance(1.999)
    assert (await query(client, job_id))["State"] == "Queuing"
    clock.advance(0.001)
    analysing = await query(client, job_id)
    assert analysing["State"] == "Analysing"
    assert analysing["Result"] == ""
    clock.advance(4.999)
    assert (await query(client, job_id))["State"] == "Analysing"
    clock.advance(0.001)
    done = await query(client, job_id)
    assert done["State"] == "Success"
    stamp = str(int(EPOCH * 1000))
    assert files_of(done) == [
        f"covers/Launch Day.final-{stamp}-0.jpg",
        f"covers/Launch Day.final-{stamp}-1.jpg",
        f"covers/Launch Day.final-{stamp}-2.jpg",
    ]
    # Terminal: it stays so.
    clock.advance(86_400)
    assert await query(client, job_id) == done


@pytest.mark.parametrize("key", ["fail.mp4", "tests/FAILING/clip.mp4", "x-Fail-y.mp4"])
async def test_an_input_named_fail_fails(
    client: httpx.AsyncClient, clock: ManualClock, key: str
) -> None:
    job_id = await submit(client, "VideoH2V", Input=f"{IN}/{key}")
    clock.advance(7)
    job = await query(client, job_id)
    assert job["State"] == "Fail"
    result = json.loads(job["Result"])
    assert result["Code"] != "Success"
    assert key in result["Message"]


async def test_defaults_of_a_bare_submit(
    app: Starlette, client: httpx.AsyncClient, clock: ManualClock
) -> None:
    first = await submit(client, "VideoClip", Input=f"{IN}/talk.mp4")
    second = await submit(client, "ImageH2V")
    clock.advance(7)
    one, two = await query(client, first), await query(client, second)
    # No UserData: the text "null", as MPS answers. No PipelineId: the account's default one.
    assert one["UserData"] == two["UserData"] == "null"
    assert one["PipelineId"] == two["PipelineId"] == simulator_of(app).default_pipeline_id
    assert "Output" not in one
    assert "JobParams" not in one
    stamp = str(int(EPOCH * 1000))
    assert files_of(one) == [f"iproduction/talk-{stamp}-{index}.mp4" for index in range(3)]
    assert files_of(two) == [f"iproduction/{second}-{stamp}-0.jpg"]


async def test_caption_extraction_writes_srt_files(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    single = await submit(
        client,
        "CaptionExtraction",
        Input=f"{IN}/b48d02b58e9b6a0d1c13271bcf9aa6d7.mp4",
        Output=f"{OUT}/captionextraction/{{source}}-{{timestamp}}.srt",
    )
    separate = await submit(
        client,
        "CaptionExtraction",
        Input=f"{IN}/lecture.mp4",
        Output=f"{OUT}/captions/{{source}}-{{resultType}}.srt",
        JobParams="{fps:5, sep:true}",
    )
    clock.advance(7)
    stamp = str(int(EPOCH * 1000))
    assert files_of(await query(client, single)) == [
        f"captionextraction/b48d02b58e9b6a0d1c13271bcf9aa6d7-{stamp}.srt"
    ]
    assert files_of(await query(client, separate)) == [
        "captions/lecture-zh.srt",
        "captions/lecture-en.srt",
    ]


async def test_zero_durations_finish_at_once(
    make_app: Callable[..., Starlette], clock: ManualClock
) -> None:
    app = make_app(queue_seconds=0, run_seconds=0)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://simulator",
        auth=RpcSignatureV1(AK, SECRET, clock=clock),
    ) as client:
        job_id = await submit(client, "FaceBeauty", Input=f"{IN}/face.mp4")
        assert (await query(client, job_id))["State"] == "Success"


@pytest.mark.parametrize(
    ("params", "code", "message"),
    [
        ({}, "MissingFunctionName", "FunctionName is mandatory for this action."),
        (
            {"FunctionName": "VideoSuperResolution"},
            "InvalidParameter",
            'The specified parameter "FunctionName" is invalid.',
        ),
        (
            {"FunctionName": "Cover", "Input": "https://example.com/a.mp4"},
            "InvalidParameter",
            'The specified parameter "Input" is invalid.',
        ),
        (
            {"FunctionName": "Cover", "Input": "oss://bucket/a.mp4"},
            "InvalidParameter",
            'The specified parameter "Input" is invalid.',
        ),
        (
            {"FunctionName": "Cover", "Output": "oss://Bad_Bucket.oss-cn-shanghai.aliyuncs.com/x"},
            "InvalidParameter",
            'The specified parameter "Output" is invalid.',
        ),
        (
            {"FunctionName": "Cover", "NotifyUrl": "https://example.com/hook"},
            "InvalidParameter",
            'The specified parameter "NotifyUrl" is invalid.',
        ),
    ],
)
async def test_submit_errors(
    client: httpx.AsyncClient, params: dict[str, str], code: str, message: str
) -> None:
    response = await client.post("/", data=submit_params("", **params))
    assert response.status_code == 400
    body = response.json()
    assert (body["Code"], body["Message"]) == (code, message)


async def test_query_without_job_id(client: httpx.AsyncClient) -> None:
    params = query_params("")
    del params["JobId"]
    response = await client.get("/", params=params)
    assert response.status_code == 400
    assert response.json()["Code"] == "MissingJobId"


async def test_unknown_job_answers_only_request_id_and_job_id(client: httpx.AsyncClient) -> None:
    response = await client.get("/", params=query_params("f" * 32))
    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["RequestId", "JobId"]
    assert body["JobId"] == "f" * 32


async def test_listing_follows_submitted_jobs(
    app: Starlette, client: httpx.AsyncClient, clock: ManualClock
) -> None:
    job_id = await submit(client, "SpeechDenoise", Input=f"{IN}/call.wav")
    admin = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sim")
    async with admin:
        listing = (await admin.get("/_simulator/jobs")).json()["jobs"]
        stored = [entry for entry in listing if entry["source"] != "cycling"]
        assert stored[-1] == {
            "id": job_id,
            "functionName": "SpeechDenoise",
            "state": "Queuing",
            "quirk": None,
            "source": "submitted",
        }
        clock.advance(10)
        detail = (await admin.get(f"/_simulator/jobs/{job_id}")).json()
        assert detail["job"]["state"] == "Success"
        assert detail["fields"]["State"] == "Success"


async def test_planted_jobs_are_answered_verbatim(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    job_id = "0123456789abcdef0123456789abcdef"
    planted = {"JobId": job_id, "State": "Success", "Result": "{not json", "Extra": 5}
    admin = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sim")
    async with admin:
        stored = await admin.put(f"/_simulator/jobs/{job_id}", json=planted)
        assert stored.status_code == 200
        assert stored.json() == {
            "id": job_id,
            "functionName": None,
            "state": "Success",
            "quirk": "custom: answered verbatim",
            "source": "custom",
        }
        assert await query(client, job_id) == planted
        # Overwriting a demo job is allowed too.
        await admin.put(f"/_simulator/jobs/{DOC_EXAMPLE_JOB_ID}", json={"State": "Fail"})
        assert await query(client, DOC_EXAMPLE_JOB_ID) == {"State": "Fail"}

        assert (await admin.delete(f"/_simulator/jobs/{job_id}")).status_code == 204
        assert (await admin.delete(f"/_simulator/jobs/{job_id}")).status_code == 404
        assert await query(client, job_id) == {"JobId": job_id}

        bad = await admin.put(f"/_simulator/jobs/{job_id}", content=b"[1, 2]")
        assert bad.status_code == 400
        assert bad.json() == {"error": "Expected a JSON object as the body, received list."}


class BrokenJob:
    job_id = "b" * 32

    def fields(self, now: float) -> dict[str, Any]:
        raise RuntimeError("a bug in the simulator")

    def summary(self, now: float) -> dict[str, Any]:
        return {"id": self.job_id}


async def test_a_simulator_bug_answers_internal_error(
    app: Starlette, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    simulator_of(app).store.put(BrokenJob())
    response = await client.get("/", params=query_params(BrokenJob.job_id))
    assert response.status_code == 500
    assert response.json()["Code"] == "InternalError"
    assert "a bug in the simulator" in caplog.text


async def test_stored_jobs_are_bounded(
    make_app: Callable[..., Starlette], clock: ManualClock
) -> None:
    app = make_app(max_jobs=2)
    store = simulator_of(app).store
    demo = len(store)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://simulator",
        auth=RpcSignatureV1(AK, SECRET, clock=clock),
    ) as client:
        ids = [await submit(client, "Cover") for _ in range(3)]
        # A demo job overwritten through the admin API counts as added, and is the newest.
        await client.put(f"/_simulator/jobs/{DOC_EXAMPLE_JOB_ID}", json={"State": "Fail"})
    assert len(store) == demo - 1 + 2
    assert store.get(ids[0]) is None
    assert store.get(ids[1]) is None
    assert store.get(ids[2]) is not None
    assert store.get(DOC_EXAMPLE_JOB_ID) is not None
