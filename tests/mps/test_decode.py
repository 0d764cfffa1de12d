from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.model import (
    Job,
    JobResult,
    JobState,
    JsonValue,
    Malformed,
    OssObject,
    ResultFile,
    SubmittedJob,
)
from gateway.mps.decode import (
    DecodeError,
    MissingJobId,
    OssUrlError,
    decode_job,
    decode_submit,
    parse_oss_url,
)

# docs/upstream.md section 1.2, verbatim.
DOC_EXAMPLE = r"""{"FunctionName":"ImageCartoonize","Input":"oss://example-****.oss-cn-hangzhou.aliyuncs.com/example.mp4",
 "RequestId":"D127C68E-F1A1-4CE5-A874-8FF724881A12","UserData":"null","State":"Success",
 "Output":"oss://example-****.oss-cn-hangzhou.aliyuncs.com/iproduction/{source}-{timestamp}-{sequenceId}.srt",
 "PipelineId":"39f8e0bc005e4f309379701645f4****","JobParams":"{mode:\"gif\"}",
 "JobId":"88c6ca184c0e432bbf5b665e2a15****",
 "Result":"{\"Code\":\"Success\",\"Data\":\"{\\\"result\\\":[{\\\"file\\\":\\\"iproduction/test-result.jpg\\\"},{\\\"file\\\":\\\"iproduction/test-origin.jpg\\\"}]}\",\"Message\":\"Successful.\"}"}"""

HANGZHOU = "oss-cn-hangzhou.aliyuncs.com"
OUTPUT = "oss://out.oss-cn-shanghai.aliyuncs.com/iproduction/{source}-{sequenceId}.jpg"
OUT_BUCKET = OssObject("out", "oss-cn-shanghai.aliyuncs.com", "", "cn-shanghai")


def placed(key: str, where: OssObject = OUT_BUCKET) -> ResultFile:
    return ResultFile(key, OssObject(where.bucket, where.endpoint, key, where.region))


def job_body(**fields: object) -> dict[str, object]:
    """A running job's body, with `fields` added (or, given as None, removed)."""
    body: dict[str, object] = {
        "RequestId": "req-1",
        "JobId": "job-1",
        "State": "Analysing",
        "FunctionName": "Cover",
        "Input": "oss://in.oss-cn-shanghai.aliyuncs.com/video.mp4",
        "Output": OUTPUT,
        "UserData": "null",
    }
    body.update(fields)
    return {name: value for name, value in body.items() if value is not None}


def decode(**fields: object) -> Job:
    job = decode_job(job_body(**fields), fetched_at=100.0)
    assert job is not None
    return job


def decode_result(result: object, output: object = OUTPUT) -> JobResult | Malformed | None:
    return decode(State="Success", Result=result, Output=output).result


def test_doc_example_decodes_whole() -> None:
    job = decode_job(json.loads(DOC_EXAMPLE), fetched_at=1700000000.5)

    bucket = OssObject("example-****", HANGZHOU, "", "cn-hangzhou")
    assert job == Job(
        id="88c6ca184c0e432bbf5b665e2a15****",
        state=JobState.SUCCESS,
        raw_state="Success",
        function_name="ImageCartoonize",
        input_url="oss://example-****.oss-cn-hangzhou.aliyuncs.com/example.mp4",
        input=OssObject("example-****", HANGZHOU, "example.mp4", "cn-hangzhou"),
        output_url=(
            "oss://example-****.oss-cn-hangzhou.aliyuncs.com"
            "/iproduction/{source}-{timestamp}-{sequenceId}.srt"
        ),
        output=OssObject(
            "example-****",
            HANGZHOU,
            "iproduction/{source}-{timestamp}-{sequenceId}.srt",
            "cn-hangzhou",
        ),
        pipeline_id="39f8e0bc005e4f309379701645f4****",
        params={"mode": "gif"},
        user_data=None,
        result=JobResult(
            code="Success",
            message="Successful.",
            files=(
                placed("iproduction/test-result.jpg", bucket),
                placed("iproduction/test-origin.jpg", bucket),
            ),
            data={
                "result": [
                    {"file": "iproduction/test-result.jpg"},
                    {"file": "iproduction/test-origin.jpg"},
                ]
            },
        ),
        request_id="D127C68E-F1A1-4CE5-A874-8FF724881A12",
        fetched_at=1700000000.5,
    )
    assert job.raw == json.loads(DOC_EXAMPLE)
    assert job.output is not None
    assert not isinstance(job.output, Malformed)
    assert job.output.is_template
    assert job.result is not None
    assert not isinstance(job.result, Malformed)
    assert job.result.succeeded
    assert job.result.files[0].object is not None
    assert job.result.files[0].object.https_url == (
        "https://example-****.oss-cn-hangzhou.aliyuncs.com/iproduction/test-result.jpg"
    )


# --- not found, ids ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"RequestId": "req-1", "JobId": "job-1"},  # docs/upstream.md §1.7: MPS's "no such job"
        {"RequestId": "req-1", "JobId": "job-1", "State": ""},
        {"RequestId": "req-1", "JobId": "job-1", "State": "  "},
        {"RequestId": "req-1", "JobId": "job-1", "State": None},
    ],
)
def test_no_usable_state_is_not_found(body: dict[str, object]) -> None:
    assert decode_job(body, fetched_at=0.0, job_id="job-1") is None


def test_job_id_falls_back_to_the_requested_id_and_is_kept_in_raw() -> None:
    job = decode_job({"State": "Queuing", "JobId": ""}, fetched_at=0.0, job_id="asked")

    assert job is not None
    assert job.id == "asked"
    assert job.raw == {"State": "Queuing", "JobId": "asked"}
    assert decode_job(job.raw, fetched_at=0.0) == job


def test_body_job_id_wins_over_the_requested_id() -> None:
    job = decode_job(job_body(JobId="from-body"), fetched_at=0.0, job_id="asked")

    assert job is not None
    assert job.id == "from-body"


def test_a_job_nobody_names_is_none() -> None:
    assert decode_job({"State": "Success"}, fetched_at=0.0) is None
    assert decode_job({"State": "Success", "JobId": " "}, fetched_at=0.0, job_id="") is None


# --- state, function name, plain strings ------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "state"),
    [
        ("Queuing", JobState.QUEUING),
        ("Analysing", JobState.ANALYSING),
        ("Success", JobState.SUCCESS),
        ("Fail", JobState.FAIL),
        ("Succes", JobState.UNKNOWN),  # the typo in the CaptionExtraction callback example
        ("Failed", JobState.UNKNOWN),
        (" Success ", JobState.SUCCESS),
    ],
)
def test_state(raw: str, state: JobState) -> None:
    job = decode(State=raw)

    assert job.state is state
    assert job.raw_state == raw


@pytest.mark.parametrize(("value", "text"), [(3, "3"), (True, "true"), ({"s": 1}, '{"s":1}')])
def test_a_non_string_state_is_an_unknown_state_not_a_missing_job(value: object, text: str) -> None:
    job = decode(State=value)

    assert job.state is JobState.UNKNOWN
    assert job.raw_state == text


def test_function_name_stays_an_open_string() -> None:
    assert decode(FunctionName="BrandNewAlgorithm").function_name == "BrandNewAlgorithm"
    assert decode(FunctionName="").function_name is None


def test_plain_strings_blank_is_none() -> None:
    job = decode(PipelineId="", RequestId=None)

    assert job.pipeline_id is None
    assert job.request_id is None
    assert decode(PipelineId="p-1", RequestId="r-9").pipeline_id == "p-1"


def test_non_string_values_are_read_as_their_json_text() -> None:
    job = decode(JobId=12345, PipelineId=7, FunctionName=None, UserData={"order": 1})

    assert job.id == "12345"
    assert job.pipeline_id == "7"
    assert job.function_name is None
    assert job.user_data == '{"order":1}'
    assert job.raw["UserData"] == '{"order":1}'
    assert "FunctionName" not in job.raw


def test_unknown_fields_are_kept_in_raw() -> None:
    assert decode(CreateTime="2024-01-01T00:00:00Z").raw["CreateTime"] == "2024-01-01T00:00:00Z"


# --- OSS URLs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "oss://bucket-1.oss-cn-hangzhou.aliyuncs.com/a/b.mp4",
            OssObject("bucket-1", HANGZHOU, "a/b.mp4", "cn-hangzhou"),
        ),
        (
            "oss://b.oss-cn-shanghai-internal.aliyuncs.com/x.mp4",
            OssObject("b", "oss-cn-shanghai-internal.aliyuncs.com", "x.mp4", "cn-shanghai"),
        ),
        (
            "oss://b.oss-ap-southeast-1.aliyuncs.com/x.mp4",
            OssObject("b", "oss-ap-southeast-1.aliyuncs.com", "x.mp4", "ap-southeast-1"),
        ),
        (
            "oss://b.oss-us-west-1-internal.aliyuncs.com/x.mp4",
            OssObject("b", "oss-us-west-1-internal.aliyuncs.com", "x.mp4", "us-west-1"),
        ),
        (
            "oss://b.oss-accelerate.aliyuncs.com/x.mp4",
            OssObject("b", "oss-accelerate.aliyuncs.com", "x.mp4", None),
        ),
        (  # oss:// keys are raw text: spaces, unicode, `%`, `?`, `#`, `+` kept as they are
            "oss://b.oss-cn-hangzhou.aliyuncs.com/a b/测试 %20 100%?x=1#frag+1.mp4",
            OssObject("b", HANGZHOU, "a b/测试 %20 100%?x=1#frag+1.mp4", "cn-hangzhou"),
        ),
        (  # the first `/` ends the host; later ones, doubled or trailing, belong to the key
            "oss://b.oss-cn-hangzhou.aliyuncs.com//dir/",
            OssObject("b", HANGZHOU, "/dir/", "cn-hangzhou"),
        ),
        (
            "oss://b.oss-cn-hangzhou.aliyuncs.com/out/{source}-{timestamp}-{sequenceId}.srt",
            OssObject("b", HANGZHOU, "out/{source}-{timestamp}-{sequenceId}.srt", "cn-hangzhou"),
        ),
        (  # scheme and host are case-insensitive; the key is not
            "  OSS://Bucket.OSS-CN-HANGZHOU.AliyunCS.com/Key.MP4",
            OssObject("bucket", HANGZHOU, "Key.MP4", "cn-hangzhou"),
        ),
        (  # https keys are percent-decoded; the query (a presigned signature) is dropped
            "https://b.oss-cn-hangzhou.aliyuncs.com/a%20b/%E6%B5%8B%25.mp4?x-oss-signature=abc",
            OssObject("b", HANGZHOU, "a b/测%.mp4", "cn-hangzhou"),
        ),
        (  # `+` is a plus in a path, not a space
            "https://b.oss-cn-hangzhou-internal.aliyuncs.com/a+b.mp4#top",
            OssObject("b", "oss-cn-hangzhou-internal.aliyuncs.com", "a+b.mp4", "cn-hangzhou"),
        ),
        (
            "http://b.oss-cn-hangzhou.aliyuncs.com:80/k.mp4",
            OssObject("b", HANGZHOU, "k.mp4", "cn-hangzhou"),
        ),
    ],
)
def test_parse_oss_url(url: str, expected: OssObject) -> None:
    assert parse_oss_url(url) == expected


def test_a_bucket_only_url_is_placed_in_the_given_region() -> None:
    url = "oss://media/in/a b.mp4"

    assert parse_oss_url(url, region="cn-beijing") == OssObject(
        "media", "oss-cn-beijing.aliyuncs.com", "in/a b.mp4", "cn-beijing"
    )
    with pytest.raises(OssUrlError, match="names a bucket but no endpoint"):
        parse_oss_url(url)
    # A full URL names its own region; the given one does not override it.
    assert parse_oss_url("oss://b.oss-cn-hangzhou.aliyuncs.com/k", region="cn-beijing").region == (
        "cn-hangzhou"
    )


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("", "no oss:// or https:// scheme"),
        ("example.mp4", "no oss:// or https:// scheme"),
        ("ftp://b.oss-cn-hangzhou.aliyuncs.com/k", "neither oss:// nor https://"),
        ("oss://", "names no bucket"),
        ("oss:///k.mp4", "names no bucket"),
        ("oss://b.oss-cn-hangzhou.aliyuncs.com", "names no object key"),
        ("oss://b.oss-cn-hangzhou.aliyuncs.com/", "names no object key"),
        ("https://b.oss-cn-hangzhou.aliyuncs.com", "names no object key"),
        ("oss://b.example.com/k", "host is not"),
        ("oss://my_bucket.oss-cn-hangzhou.aliyuncs.com/k", "host is not"),
        ("oss://b.oss-cn-hangzhou.aliyuncs.com.evil.com/k", "host is not"),
        ("https://bucket/k", "host is not"),
        ("https://oss-cn-hangzhou.aliyuncs.com/b/k", "host is not"),
        ("https://[::1/k", "not a well-formed URL"),
    ],
)
def test_parse_oss_url_refuses(url: str, reason: str) -> None:
    with pytest.raises(OssUrlError, match=reason) as caught:
        parse_oss_url(url)

    assert isinstance(caught.value, ValueError)
    assert str(caught.value).startswith(
        "Expected an OSS URL such as oss://<bucket>.oss-<region>.aliyuncs.com/<key>, received "
    )


def test_url_errors_never_show_credentials() -> None:
    url = "https://user:PASSWORD@cdn.example.com/k.mp4?security-token=TOKEN&x-oss-signature=SIG"

    with pytest.raises(OssUrlError) as caught:
        parse_oss_url(url)

    message = str(caught.value)
    assert "https://cdn.example.com/k.mp4" in message
    for secret in ("PASSWORD", "TOKEN", "SIG"):
        assert secret not in message


def test_url_errors_are_short() -> None:
    with pytest.raises(OssUrlError) as caught:
        parse_oss_url("oss://b.example.com/" + "k" * 10_000)

    assert len(str(caught.value)) < 300


bucket_names = st.from_regex(r"[a-z0-9][a-z0-9-]{2,20}", fullmatch=True)
region_names = st.from_regex(r"(cn|ap|us|eu)-[a-z]{4,10}(-[1-9])?", fullmatch=True)
object_keys = st.text(min_size=1).filter(lambda key: "{" not in key)


@given(bucket=bucket_names, region=region_names, key=object_keys, internal=st.booleans())
def test_oss_and_https_urls_of_an_object_parse_back_to_it(
    bucket: str, region: str, key: str, internal: bool
) -> None:
    endpoint = f"oss-{region}{'-internal' if internal else ''}.aliyuncs.com"
    obj = OssObject(bucket, endpoint, key, region)

    assert parse_oss_url(obj.oss_url) == obj
    assert parse_oss_url(obj.https_url) == obj


def test_input_and_output_that_are_not_oss_urls_are_malformed_fields() -> None:
    job = decode(Input="/local/file.mp4", Output="https://cdn.example.com/out.mp4")

    assert job.input_url == "/local/file.mp4"
    assert isinstance(job.input, Malformed)
    assert job.input.field == "input"
    assert "no oss:// or https:// scheme" in job.input.reason
    assert job.output_url == "https://cdn.example.com/out.mp4"
    assert isinstance(job.output, Malformed)
    assert job.output.field == "output"


def test_missing_input_and_output() -> None:
    job = decode(Input=None, Output="")

    assert (job.input_url, job.input, job.output_url, job.output) == (None, None, None, None)


def test_region_places_bucket_only_urls_of_a_job() -> None:
    body = job_body(Input="oss://in/v.mp4", Output="oss://out/{source}.jpg", State="Success")
    body["Result"] = json.dumps({"Code": "Success", "Data": '{"result":[{"file":"v.jpg"}]}'})

    job = decode_job(body, fetched_at=0.0, region="cn-shanghai")

    assert job is not None
    assert job.input == OssObject("in", "oss-cn-shanghai.aliyuncs.com", "v.mp4", "cn-shanghai")
    assert isinstance(job.result, JobResult)
    assert job.result.files == (placed("v.jpg"),)
    assert decode_job(job.raw, fetched_at=job.fetched_at, region="cn-shanghai") == job


# --- JobParams, UserData ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "params"),
    [
        ('{mode:"gif"}', {"mode": "gif"}),
        (
            '{"fps":5,"roi":[[0.75,1],[0,1]],"sep":true}',
            {"fps": 5, "roi": [[0.75, 1], [0, 1]], "sep": True},
        ),
        (
            "{fps: 5, formatter: '{\\\\an8}', track: 'main',}",
            {"fps": 5, "formatter": "{\\an8}", "track": "main"},
        ),
        ("// comment\n{Text: [[1, 2, 3, 4]]}", {"Text": [[1, 2, 3, 4]]}),
        ("[1, 2]", [1, 2]),
        ("5", 5),
        ("null", None),
        ("", None),
        ("   ", None),
        (None, None),
    ],
)
def test_job_params_relaxed_json(text: str | None, params: JsonValue) -> None:
    assert decode(JobParams=text).params == params


@pytest.mark.parametrize(("value", "params"), [(5, 5), ({"fps": 5}, {"fps": 5}), (False, False)])
def test_non_string_job_params_are_taken_as_json(value: object, params: JsonValue) -> None:
    assert decode(JobParams=value).params == params


@pytest.mark.parametrize("text", ["{mode:", "gif", "{a: 1} trailing", "[" * 5000])
def test_undecodable_job_params_are_malformed(text: str) -> None:
    params = decode(JobParams=text).params

    assert isinstance(params, Malformed)
    assert params.field == "params"
    assert params.reason.startswith("JobParams ")


@pytest.mark.parametrize(
    ("text", "user_data"),
    [
        ("null", None),
        ("", None),
        (None, None),
        ("NULL", "NULL"),
        ('{"order": "A-1"}', '{"order": "A-1"}'),
        (" ", " "),
    ],
)
def test_user_data(text: str | None, user_data: str | None) -> None:
    assert decode(UserData=text).user_data == user_data


# --- Result -----------------------------------------------------------------------------------


def test_result_double_encoded() -> None:
    data: JsonValue = {"result": [{"file": "iproduction/a.jpg"}, {"file": "iproduction/b.jpg"}]}
    result = json.dumps({"Code": "Success", "Message": "Successful.", "Data": json.dumps(data)})

    assert decode_result(result) == JobResult(
        code="Success",
        message="Successful.",
        files=(placed("iproduction/a.jpg"), placed("iproduction/b.jpg")),
        data=data,
    )


def test_result_data_already_an_object() -> None:
    data: JsonValue = {"result": [{"file": "captionextraction/x.srt"}]}

    result = decode_result(json.dumps({"Code": "Success", "Data": data}))

    assert result == JobResult("Success", None, (placed("captionextraction/x.srt"),), data)


@pytest.mark.parametrize(
    ("data", "decoded"),
    [
        (
            '{"BeatList":[0.5,1.0],"DownBeatList":[0.5]}',
            {"BeatList": [0.5, 1.0], "DownBeatList": [0.5]},
        ),
        ([{"start": 1, "end": 2}], [{"start": 1, "end": 2}]),
        ("[]", []),
        ("no chorus found", "no chorus found"),  # not JSON: kept as the string, not an error
        ("", ""),
        (None, None),
        (7, 7),
    ],
)
def test_result_data_without_files(data: object, decoded: JsonValue) -> None:
    result = decode_result(json.dumps({"Code": "Success", "Message": "ok", "Data": data}))

    assert result == JobResult("Success", "ok", (), decoded)


def test_fail_result_carries_the_failure_code() -> None:
    result = decode_result(
        json.dumps(
            {
                "Code": "InvalidParameter.ResourceContentBad",
                "Message": "The resource operated cannot be decoded.",
                "Data": "",
            }
        )
    )

    assert result == JobResult(
        code="InvalidParameter.ResourceContentBad",
        message="The resource operated cannot be decoded.",
        files=(),
        data="",
    )
    assert not result.succeeded


@pytest.mark.parametrize(
    "data",
    [
        {
            "result": [
                {"file": "a.jpg"},
                {"name": "no file"},
                {"file": ""},
                {"file": 3},
                "b.jpg",
                None,
            ]
        },
        {"result": [{"file": "a.jpg", "extra": {"score": 0.9}}]},
    ],
)
def test_result_entries_without_a_file_key_are_skipped(data: dict[str, Any]) -> None:
    result = decode_result(json.dumps({"Code": "Success", "Data": json.dumps(data)}))

    assert isinstance(result, JobResult)
    assert result.files == (placed("a.jpg"),)


@pytest.mark.parametrize("entries", [None, "a.jpg", {"file": "a.jpg"}, 3])
def test_result_list_missing_or_not_a_list_gives_no_files(entries: object) -> None:
    data = {} if entries is None else {"result": entries}

    result = decode_result(json.dumps({"Code": "Success", "Data": json.dumps(data)}))

    assert isinstance(result, JobResult)
    assert result.files == ()
    assert result.data == data


@pytest.mark.parametrize("output", [None, "not a url"])
def test_result_files_without_a_usable_output_have_no_object(output: str | None) -> None:
    result = decode_result(
        json.dumps({"Code": "Success", "Data": '{"result":[{"file":"a.jpg"}]}'}), output
    )

    assert isinstance(result, JobResult)
    assert result.files == (ResultFile("a.jpg", None),)


@pytest.mark.parametrize("result", ["", "  ", None])
def test_running_job_has_no_result(result: str | None) -> None:
    assert decode(State="Analysing", Result=result).result is None


@pytest.mark.parametrize(
    ("result", "reason"),
    [
        ("Successful.", "Result is not JSON: Expecting value: line 1 column 1 (char 0)."),
        ('{"Code":"Success"', "Result is not JSON: "),
        ("[" * 100_000, "Result nests too deeply to decode."),
        ('["Success"]', "Result decodes to a list, expected an object with Code and Data."),
        ('"Success"', "Result decodes to a string, expected an object with Code and Data."),
        ("null", "Result decodes to null, expected an object with Code and Data."),
        (5, "Result decodes to a number, expected an object with Code and Data."),
        (True, "Result decodes to a boolean, expected an object with Code and Data."),
        ([{"Code": "Success"}], "Result decodes to a list, expected an object with Code and Data."),
    ],
)
def test_undecodable_result_is_malformed(result: object, reason: str) -> None:
    decoded = decode_result(result)

    assert isinstance(decoded, Malformed)
    assert decoded.field == "result"
    assert decoded.reason.startswith(reason)


def test_result_sent_as_an_object_is_accepted() -> None:
    # The upstream promises a JSON string; an object already decoded means the same thing.
    result = decode_result({"Code": "Success", "Data": '{"result":[{"file":"a.jpg"}]}'})

    assert result == JobResult("Success", None, (placed("a.jpg"),), {"result": [{"file": "a.jpg"}]})


def test_result_code_and_message_that_are_not_strings_are_read_as_json_text() -> None:
    result = decode_result(json.dumps({"Code": 0, "Message": ["x"]}))

    assert result == JobResult("0", '["x"]', (), None)


# --- SubmitIProductionJob ---------------------------------------------------------------------


def test_decode_submit() -> None:
    body = {
        "RequestId": "5210DBB0-E327-4D45-ADBC-0B83C8796E26",
        "JobId": "39f8e0bc005e4f309379701645f4****",
        "Result": '{"Code":"Success","Details":[],"State":"Success","Type":"IProduction"}',
    }

    assert decode_submit(body) == SubmittedJob(
        job_id="39f8e0bc005e4f309379701645f4****",
        request_id="5210DBB0-E327-4D45-ADBC-0B83C8796E26",
    )
    assert decode_submit({"JobId": 42}) == SubmittedJob(job_id="42", request_id=None)


@pytest.mark.parametrize("body", [{}, {"RequestId": "r"}, {"JobId": ""}, {"JobId": None}])
def test_decode_submit_without_job_id_raises(body: dict[str, object]) -> None:
    with pytest.raises(MissingJobId, match="Expected a JobId in the SubmitIProductionJob response"):
        decode_submit(body)
    assert issubclass(MissingJobId, DecodeError)
    assert issubclass(DecodeError, ValueError)


# --- properties -------------------------------------------------------------------------------

FIELDS = (
    "RequestId",
    "JobId",
    "FunctionName",
    "State",
    "Input",
    "Output",
    "PipelineId",
    "JobParams",
    "UserData",
    "Result",
)


def json_values(*, allow_nan: bool) -> st.SearchStrategy[JsonValue]:
    return st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=allow_nan) | st.text(),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=8), children, max_size=4)
        ),
        max_leaves=12,
    )


def json_texts(*, allow_nan: bool) -> st.SearchStrategy[str]:
    return json_values(allow_nan=allow_nan).map(lambda value: json.dumps(value))


oss_urls = st.builds(
    lambda scheme, bucket, region, key: f"{scheme}://{bucket}.oss-{region}.aliyuncs.com/{key}",
    st.sampled_from(["oss", "https"]),
    bucket_names,
    region_names,
    st.text(min_size=1, max_size=20),
) | st.builds(
    lambda bucket, key: f"oss://{bucket}/{key}", bucket_names, st.text(min_size=1, max_size=20)
)
file_lists = st.lists(
    st.fixed_dictionaries({"file": st.text(max_size=12)})
    | st.dictionaries(st.sampled_from(["file", "other"]), st.text(max_size=12) | st.integers()),
    max_size=3,
)
results = st.builds(
    lambda code, message, data, twice: json.dumps(
        {"Code": code, "Message": message, "Data": json.dumps(data) if twice else data}
    ),
    st.sampled_from(["Success", "InvalidParameter", ""]) | st.text(max_size=5),
    st.text(max_size=10),
    st.fixed_dictionaries({"result": file_lists}) | json_values(allow_nan=False),
    st.booleans(),
)


def field_values(*, allow_nan: bool) -> st.SearchStrategy[object]:
    """Values the upstream could plausibly, or implausibly, put in any field."""
    return st.one_of(
        st.sampled_from(["", " ", "null", "Queuing", "Success", "Succes", '{mode:"gif"}']),
        st.text(max_size=30),
        oss_urls,
        results,
        json_texts(allow_nan=allow_nan),
        json_values(allow_nan=allow_nan),
    )


def bodies(*, allow_nan: bool, job: bool = False) -> st.SearchStrategy[dict[str, object]]:
    """Any subset of the fields, each mostly of its own kind, plus fields of other names. With
    `job`, State and JobId are always there and mostly usable, so most bodies decode to a job."""
    generic = field_values(allow_nan=allow_nan)
    own_kind: dict[str, st.SearchStrategy[object]] = {
        "State": st.sampled_from(["Queuing", "Analysing", "Success", "Fail", "Succes"]),
        "JobId": st.text(min_size=1, max_size=10),
        "Input": oss_urls,
        "Output": oss_urls,
        "JobParams": json_texts(allow_nan=allow_nan) | st.just('{mode:"gif"}'),
        "Result": results,
    }
    # Half of each field's own kind, half anything (`map` stops one_of from flattening `generic`,
    # which would leave the own kind one chance in seven).
    anything = generic.map(lambda value: value)
    values = {name: own_kind.get(name, st.text(max_size=10)) | anything for name in FIELDS}
    required = {name: values[name] for name in ("State", "JobId")} if job else {}
    known = st.fixed_dictionaries(
        required, optional={name: values[name] for name in FIELDS if name not in required}
    )
    others = st.dictionaries(st.text(max_size=10), generic, max_size=2)
    return st.builds(lambda extra, fields: {**extra, **fields}, others, known)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(
    body=bodies(allow_nan=False, job=True),
    job_id=st.none() | st.text(max_size=8),
    region=st.none() | region_names,
    fetched_at=st.floats(min_value=0, max_value=2e9),
)
def test_raw_and_fetched_at_rebuild_the_same_job(
    body: dict[str, object], job_id: str | None, region: str | None, fetched_at: float
) -> None:
    job = decode_job(body, fetched_at=fetched_at, job_id=job_id, region=region)
    if job is None:
        return

    assert all(isinstance(k, str) and isinstance(v, str) for k, v in job.raw.items())
    rebuilt = decode_job(job.raw, fetched_at=job.fetched_at, region=region)
    assert rebuilt == job
    assert rebuilt is not None
    assert rebuilt.raw == job.raw


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(
    body=bodies(allow_nan=True),
    job_id=st.none() | st.text(max_size=8),
    region=st.none() | region_names,
)
def test_decode_job_never_raises(
    body: dict[str, object], job_id: str | None, region: str | None
) -> None:
    job = decode_job(body, fetched_at=0.0, job_id=job_id, region=region)

    assert job is None or isinstance(job, Job)


@settings(deadline=None)
@given(body=bodies(allow_nan=True))
def test_decode_submit_raises_only_missing_job_id(body: dict[str, object]) -> None:
    try:
        submitted = decode_submit(body)
    except MissingJobId:
        return
    assert isinstance(submitted, SubmittedJob)


def test_non_json_shaped_values_do_not_raise_either() -> None:
    cycle: list[object] = []
    cycle.append(cycle)

    job = decode(JobParams={1, 2}, Result=cycle, UserData=math.inf, PipelineId=b"bytes")

    assert isinstance(job.params, Malformed)
    assert isinstance(job.result, Malformed)
    assert job.user_data == "Infinity"


def test_a_key_with_a_lone_surrogate_still_has_an_https_url() -> None:
    # JSON can carry "\ud800"; the URL of such a key must not fail the whole result.
    body = {
        "JobId": "j",
        "State": "Success",
        "Output": "oss://b.oss-cn-shanghai.aliyuncs.com/out/{source}.jpg",
        "Result": json.dumps(
            {"Code": "Success", "Data": json.dumps({"result": [{"file": "out/\ud800.jpg"}]})}
        ),
    }
    job = decode_job(body, fetched_at=0.0)
    assert job is not None
    assert isinstance(job.result, JobResult)
    [file] = job.result.files
    assert file.object is not None
    assert file.object.https_url == "https://b.oss-cn-shanghai.aliyuncs.com/out/%ED%A0%80.jpg"
