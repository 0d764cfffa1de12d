"""The official SDK (alibabacloud-mts20140618), unchanged, against the simulator on a real port."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from alibabacloud_mts20140618 import models as mts_models
from alibabacloud_mts20140618.client import Client as MtsClient
from alibabacloud_tea_openapi.exceptions import ClientException
from alibabacloud_tea_openapi.models import Config
from starlette.applications import Starlette

from gateway.settings import SimulatorSettings
from gateway.simulator import DOC_EXAMPLE_JOB_ID, create_simulator_app
from tests.servers import run_asgi_server
from tests.simulator.conftest import AK, SECRET, simulator_of

DOC_EXAMPLE_FIELDS = {
    "JobId": DOC_EXAMPLE_JOB_ID,
    "FunctionName": "ImageCartoonize",
    "State": "Success",
    "Input": "oss://example-bucket.oss-cn-hangzhou.aliyuncs.com/example.mp4",
    "Output": (
        "oss://example-bucket.oss-cn-hangzhou.aliyuncs.com/iproduction/"
        "{source}-{timestamp}-{sequenceId}.srt"
    ),
    "PipelineId": "39f8e0bc005e4f309379701645f4d0c1",
    "JobParams": '{mode:"gif"}',
    "UserData": "null",
    "Result": (
        '{"Code":"Success","Data":"{\\"result\\":[{\\"file\\":\\"iproduction/test-result.jpg\\"},'
        '{\\"file\\":\\"iproduction/test-origin.jpg\\"}]}","Message":"Successful."}'
    ),
}

SIGNATURES = [pytest.param(None, id="v3-default"), pytest.param("v2", id="v1-signature")]


@pytest.fixture(scope="module")
def app() -> Starlette:
    # On the real clock: the SDK stamps its requests with the real time.
    return create_simulator_app(SimulatorSettings(queue_seconds=60))


@pytest.fixture(scope="module")
def endpoint(app: Starlette) -> Iterator[str]:
    """host:port of the simulator on a real port."""
    with run_asgi_server(app) as url:
        yield url.removeprefix("http://")


def sdk_client(
    endpoint: str,
    *,
    secret: str = SECRET,
    signature: str | None = None,
    security_token: str | None = None,
) -> MtsClient:
    # The SDK builds `<protocol>://<endpoint>`, so a host:port endpoint reaches a local port; the
    # signed `host` header carries the port too.
    config = Config(
        access_key_id=AK,
        access_key_secret=secret,
        endpoint=endpoint,
        protocol="http",
        region_id="cn-shanghai",
        read_timeout=5000,
        connect_timeout=2000,
        security_token=security_token,
    )
    if signature is not None:
        config.signature_algorithm = signature
    return MtsClient(config)


def body_of(response: Any) -> dict[str, Any]:
    body: dict[str, Any] = response.body.to_map()
    return body


@pytest.mark.parametrize("signature", SIGNATURES)
@pytest.mark.parametrize("security_token", [None, "sts-token-of-a-role"])
def test_query_doc_example(
    app: Starlette, endpoint: str, signature: str | None, security_token: str | None
) -> None:
    simulator = simulator_of(app)
    before = dict(simulator.signatures)
    client = sdk_client(endpoint, signature=signature, security_token=security_token)
    response = client.query_iproduction_job(
        mts_models.QueryIProductionJobRequest(job_id=DOC_EXAMPLE_JOB_ID)
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json;charset=utf-8"
    body = body_of(response)
    request_id = body.pop("RequestId")
    assert body == DOC_EXAMPLE_FIELDS
    assert re.fullmatch(r"[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}", request_id)
    # The simulator saw the scheme the SDK was told to use.
    used = "v1" if signature == "v2" else "v3"
    assert simulator.signatures[used] == before[used] + 1


@pytest.mark.parametrize("signature", SIGNATURES)
def test_query_unknown_job_has_only_request_id_and_job_id(
    endpoint: str, signature: str | None
) -> None:
    client = sdk_client(endpoint, signature=signature)
    response = client.query_iproduction_job(mts_models.QueryIProductionJobRequest(job_id="0" * 32))
    assert response.status_code == 200
    assert set(body_of(response)) == {"RequestId", "JobId"}
    assert response.body.job_id == "0" * 32
    assert response.body.state is None


@pytest.mark.parametrize("signature", SIGNATURES)
def test_submit_then_query(endpoint: str, signature: str | None) -> None:
    client = sdk_client(endpoint, signature=signature)
    submitted = client.submit_iproduction_job(
        mts_models.SubmitIProductionJobRequest(
            function_name="CaptionExtraction",
            # Spaces, `*`, `~`, `+` and non-ASCII exercise both signatures' encodings.
            input="oss://b-in.oss-cn-shanghai.aliyuncs.com/a b/测试*~+/x.mp4",
            output="oss://b-out.oss-cn-shanghai.aliyuncs.com/iproduction/{source}-{timestamp}.srt",
            job_params='{"fps":5,"roi":[[0.75,1],[0,1]]}',
            user_data="order 42",
        )
    )
    job_id = submitted.body.job_id
    assert len(job_id) == 32
    assert '"JobId":"' + job_id + '"' in submitted.body.result

    queried = body_of(
        client.query_iproduction_job(mts_models.QueryIProductionJobRequest(job_id=job_id))
    )
    queried.pop("RequestId")
    assert queried == {
        "JobId": job_id,
        "FunctionName": "CaptionExtraction",
        "State": "Queuing",
        "Input": "oss://b-in.oss-cn-shanghai.aliyuncs.com/a b/测试*~+/x.mp4",
        "Output": "oss://b-out.oss-cn-shanghai.aliyuncs.com/iproduction/{source}-{timestamp}.srt",
        "PipelineId": queried["PipelineId"],
        "JobParams": '{"fps":5,"roi":[[0.75,1],[0,1]]}',
        "UserData": "order 42",
    }


@pytest.mark.parametrize("signature", SIGNATURES)
def test_wrong_secret_is_signature_does_not_match(endpoint: str, signature: str | None) -> None:
    client = sdk_client(endpoint, secret="not-the-secret", signature=signature)
    with pytest.raises(ClientException) as caught:
        client.query_iproduction_job(
            mts_models.QueryIProductionJobRequest(job_id=DOC_EXAMPLE_JOB_ID)
        )
    assert caught.value.code == "SignatureDoesNotMatch"
    assert caught.value.status_code == 400
    assert "server string to sign is:" in caught.value.message


@pytest.mark.parametrize("signature", SIGNATURES)
def test_submit_without_function_name_is_rejected(endpoint: str, signature: str | None) -> None:
    client = sdk_client(endpoint, signature=signature)
    with pytest.raises(ClientException) as caught:
        client.submit_iproduction_job(mts_models.SubmitIProductionJobRequest())
    assert caught.value.code == "MissingFunctionName"


@pytest.mark.parametrize("signature", SIGNATURES)
@pytest.mark.parametrize(
    ("fields", "code", "name"),
    [
        ({"input": "https://b.oss-cn-shanghai.aliyuncs.com/x.mp4"}, "InvalidParameter", "Input"),
        ({"output": "oss://b/x.mp4"}, "InvalidParameter", "Output"),
        ({"notify_url": "http://example.com/hook"}, "InvalidParameter", "NotifyUrl"),
        ({"function_name": "NoSuchAlgorithm"}, "InvalidParameter", "FunctionName"),
    ],
)
def test_submit_errors_as_the_sdk_reads_them(
    endpoint: str, signature: str | None, fields: dict[str, str], code: str, name: str
) -> None:
    client = sdk_client(endpoint, signature=signature)
    values = {"function_name": "Cover", **fields}
    with pytest.raises(ClientException) as caught:
        client.submit_iproduction_job(mts_models.SubmitIProductionJobRequest(**values))
    assert (caught.value.code, caught.value.status_code) == (code, 400)
    assert f'The specified parameter "{name}" is invalid.' in caught.value.message


@pytest.mark.parametrize("signature", SIGNATURES)
def test_submit_takes_every_documented_parameter(endpoint: str, signature: str | None) -> None:
    client = sdk_client(endpoint, signature=signature)
    submitted = client.submit_iproduction_job(
        mts_models.SubmitIProductionJobRequest(
            function_name="ImageCartoonize",
            input="oss://media.oss-cn-shanghai.aliyuncs.com/in/face.jpg",
            output="oss://media.oss-cn-shanghai.aliyuncs.com/out/{source}.gif",
            job_params='{"mode":"gif"}',
            model_id="model-1",
            schedule_params="{}",
            notify_url="mns://1234567890.mns.cn-shanghai.aliyuncs.com/queues/done",
            pipeline_id="0123456789abcdef0123456789abcdef",
            user_data="u",
        )
    )
    assert submitted.status_code == 200
    result = json.loads(submitted.body.result)
    assert result == {
        "Code": "Success",
        "Details": [],
        "FunctionName": "ImageCartoonize",
        "JobId": submitted.body.job_id,
        "Message": "success",
        "State": "Success",
        "Type": "IProduction",
    }
    queried = client.query_iproduction_job(
        mts_models.QueryIProductionJobRequest(job_id=submitted.body.job_id)
    )
    assert queried.body.pipeline_id == "0123456789abcdef0123456789abcdef"
    assert queried.body.state == "Queuing"


@pytest.mark.slow
def test_a_submitted_job_runs_to_success_as_the_sdk_sees_it() -> None:
    app = create_simulator_app(SimulatorSettings(queue_seconds=0.3, run_seconds=0.3))
    with run_asgi_server(app) as url:
        client = sdk_client(url.removeprefix("http://"))
        job_id = client.submit_iproduction_job(
            mts_models.SubmitIProductionJobRequest(
                function_name="ImageCartoonize",
                input="oss://media.oss-cn-shanghai.aliyuncs.com/in/face.jpg",
                output="oss://media.oss-cn-shanghai.aliyuncs.com/out/{source}.gif",
            )
        ).body.job_id
        request = mts_models.QueryIProductionJobRequest(job_id=job_id)
        seen = [client.query_iproduction_job(request).body.state]
        while seen[-1] not in ("Success", "Fail"):
            time.sleep(0.05)
            state = client.query_iproduction_job(request).body.state
            if state != seen[-1]:
                seen.append(state)
            assert len(seen) <= 3
        final = client.query_iproduction_job(request).body
    assert seen[-1] == "Success"
    assert seen == ["Queuing", "Analysing", "Success"][3 - len(seen) :]
    assert json.loads(final.result)["Code"] == "Success"
