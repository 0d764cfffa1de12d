"""The demo job set: what the simulator answers before anyone submits a job.

Deterministic for a given seed (`SimulatorSettings.seed`): the same seed gives the same ids and
the same answers, so a demo query printed by the CLI keeps working across restarts. These demo
jobs are static: their state never changes (the ones that move are `cycles.DemoCycles`).

The set holds, in this order:
- the documented example job (docs/upstream.md section 1.2) under `DOC_EXAMPLE_JOB_ID`, verbatim
  except that its masked `****` parts are filled in;
- one job per algorithm of `KNOWN_FUNCTIONS`, with every state represented (Queuing, Analysing,
  Success, Fail), realistic OSS Input/Output URLs in cn-shanghai, Output templates with
  `{source}`/`{timestamp}`/`{sequenceId}`, JobParams (strict and relaxed JSON), UserData (including
  the text "null"), and `Result` double-encoded as the cloud does: several files for Cover and
  VideoClip, `.srt` files for CaptionExtraction, a failure Code/Message for Fail, an empty or absent
  Result while running;
- a CaptionExtraction job with separate zh/en captions (`sep`, `{resultType}`);
- "quirk" jobs whose answer lies the way a real upstream might. Their `quirk` text (shown in
  `GET /_simulator/jobs`) starts with a stable slug from `QUIRKS`, e.g. `state-typo: ...`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from gateway.model import JsonValue
from gateway.settings import SimulatorSettings
from gateway.simulator.algorithms import ALGORITHMS
from gateway.simulator.jobs import (
    ANALYSING,
    FAIL,
    QUEUING,
    SUCCESS,
    StaticJob,
    encode_json,
    failure_result,
    success_result,
)
from gateway.simulator.oss import render_key

#: The documented example job id `88c6ca184c0e432bbf5b665e2a15****` with its mask filled in.
DOC_EXAMPLE_JOB_ID = "88c6ca184c0e432bbf5b665e2a15d0c1"

#: Slug -> what is odd about the quirk job of that slug.
QUIRKS: dict[str, str] = {
    "state-typo": "State is 'Succes', the typo of the documented CaptionExtraction callback",
    "state-unknown": "State is 'Cancelled', a value MPS does not document",
    "result-not-json": "Result is plain text, not JSON",
    "data-not-json": "Result.Data is plain text, not JSON",
    "data-not-encoded": "Result.Data is a JSON object, encoded once instead of twice",
    "params-not-json": "JobParams is not even relaxed JSON",
    "function-missing": "FunctionName is absent",
    "function-unknown": "FunctionName is an algorithm MPS does not document",
    "output-not-oss": "Output is an https URL, not an oss:// template",
}

REGION = "cn-shanghai"
_INPUT_BUCKETS = ("media-uploads-sh", "campaign-assets", "vod-source-2024")
_OUTPUT_BUCKETS = ("media-results-sh", "iproduction-output")
_FOLDERS = ("uploads/2024/05", "raw", "campaign/summer", "ugc/incoming")
_NAMES = (
    "product-launch",
    "interview-01",
    "street-food",
    "keynote-clip",
    "team-photo",
    "podcast-ep12",
    "unboxing",
    "city-timelapse",
)
_USER_DATA = ("null", '{"orderId":"A1029","channel":"web"}', "batch-42", "null")

# (algorithm, state, Result while running: None = absent, "" = empty). Every state appears, and
# the algorithms whose results MPS documents (Cover, VideoClip, CaptionExtraction,
# ImageCartoonize) are in Success.
_PLAN: tuple[tuple[str, str, str | None], ...] = (
    ("VideoH2V", SUCCESS, None),
    ("VideoDelogo", ANALYSING, ""),
    ("Cover", SUCCESS, None),
    ("VideoClip", SUCCESS, None),
    ("ImageMatting", SUCCESS, None),
    ("ImageH2V", FAIL, None),
    ("ImageDelogo", SUCCESS, None),
    ("CaptionExtraction", SUCCESS, None),
    ("VideoDetext", QUEUING, ""),
    ("VideoGreenScreenMatting", SUCCESS, None),
    ("MusicSegmentDetect", SUCCESS, None),
    ("AudioMixing", FAIL, None),
    ("VideoSplit", SUCCESS, None),
    ("AudioBeatDetection", ANALYSING, None),
    ("ImageCartoonize", SUCCESS, None),
    ("AudioQualityAssessment", QUEUING, None),
    ("FaceBeauty", SUCCESS, None),
    ("SpeechDenoise", FAIL, None),
)

_FAILURES: dict[str, tuple[str, str]] = {
    "ImageH2V": (
        "InvalidParameter.ResourceNotFound",
        'The resource operated "{input}" cannot be found.',
    ),
    "AudioMixing": ("InvalidParameter.NoAudioStream", 'The input "{input}" has no audio stream.'),
    "SpeechDenoise": (
        "InvalidParameter.ResourceContentBad",
        'The resource content of "{input}" is bad: it could not be decoded.',
    ),
}


def build_demo_jobs(seed: int) -> list[StaticJob]:
    """The whole demo set for `seed`, in a fixed order (see the module docstring)."""
    builder = _Builder(random.Random(seed))
    jobs = [_doc_example()]
    jobs += [builder.honest(name, state, running) for name, state, running in _PLAN]
    jobs.append(builder.separate_captions())
    jobs += builder.quirks()
    return jobs


def demo_job_ids(settings: SimulatorSettings, *, include_quirks: bool = False) -> list[str]:
    """Ids of the demo jobs for these settings, the documented example first.

    Quirk jobs (deliberately odd answers) are left out unless asked for.
    """
    return [
        job.job_id for job in build_demo_jobs(settings.seed) if include_quirks or job.quirk is None
    ]


def _doc_example() -> StaticJob:
    # docs/upstream.md section 1.2, verbatim but for the masked parts, which are not valid as
    # they are.
    bucket = "oss://example-bucket.oss-cn-hangzhou.aliyuncs.com"
    data = encode_json(
        {
            "result": [
                {"file": "iproduction/test-result.jpg"},
                {"file": "iproduction/test-origin.jpg"},
            ]
        }
    )
    answer: dict[str, JsonValue] = {
        "JobId": DOC_EXAMPLE_JOB_ID,
        "FunctionName": "ImageCartoonize",
        "State": "Success",
        "Input": f"{bucket}/example.mp4",
        "Output": f"{bucket}/iproduction/{{source}}-{{timestamp}}-{{sequenceId}}.srt",
        "PipelineId": "39f8e0bc005e4f309379701645f4d0c1",
        "JobParams": '{mode:"gif"}',
        "UserData": "null",
        "Result": encode_json({"Code": "Success", "Data": data, "Message": "Successful."}),
    }
    return StaticJob(DOC_EXAMPLE_JOB_ID, answer)


@dataclass
class _Builder:
    rng: random.Random

    def __post_init__(self) -> None:
        self.default_pipeline = self.hex_id()

    def hex_id(self) -> str:
        return f"{self.rng.getrandbits(128):032x}"

    def timestamp_ms(self) -> str:
        # Some time in the two years before 2025-01-01, in milliseconds (see jobs.SubmittedJob).
        return str(1_672_531_200_000 + self.rng.randrange(2 * 365 * 86_400_000))

    def url(self, bucket: str, key: str) -> str:
        return f"oss://{bucket}.oss-{REGION}.aliyuncs.com/{key}"

    def honest(self, function_name: str, state: str, running_result: str | None) -> StaticJob:
        algorithm = ALGORITHMS[function_name]
        job_id = self.hex_id()
        if function_name == "CaptionExtraction":
            # Uploaded files are often named by their MD5, as in the documented result file.
            source = f"{self.rng.getrandbits(128):032x}"
            key_template = "captionextraction/{source}-{timestamp}.srt"
        else:
            source = f"{self.rng.choice(_NAMES)}-{self.rng.randrange(1, 100):02d}"
            prefix = self.rng.choice(("iproduction", function_name.lower()))
            key_template = (
                f"{prefix}/{{source}}-{{timestamp}}-{{sequenceId}}.{algorithm.output_extension}"
            )
        input_key = f"{self.rng.choice(_FOLDERS)}/{source}.{algorithm.input_extension}"
        input_url = self.url(self.rng.choice(_INPUT_BUCKETS), input_key)
        params = algorithm.params
        if function_name == "ImageCartoonize":
            params = '{mode:"gif"}'  # the relaxed-JSON form of the documented example
        answer: dict[str, JsonValue] = {
            "JobId": job_id,
            "FunctionName": function_name,
            "State": state,
            "Input": input_url,
            "Output": self.url(self.rng.choice(_OUTPUT_BUCKETS), key_template),
            "PipelineId": self.rng.choice((self.default_pipeline, self.hex_id())),
            "JobParams": params,
            "UserData": self.rng.choice(_USER_DATA),
        }
        if state == SUCCESS:
            timestamp = self.timestamp_ms()
            files = [
                render_key(key_template, source=source, timestamp=timestamp, sequence_id=index)
                for index in range(algorithm.files)
            ]
            answer["Result"] = success_result(files)
        elif state == FAIL:
            code, message = _FAILURES[function_name]
            answer["Result"] = failure_result(code, message.format(input=input_url))
        elif running_result is not None:
            answer["Result"] = running_result
        return StaticJob(job_id, answer)

    def separate_captions(self) -> StaticJob:
        job_id = self.hex_id()
        source = f"{self.rng.getrandbits(128):032x}"
        key_template = "captionextraction/{source}-{timestamp}-{resultType}.srt"
        timestamp = self.timestamp_ms()
        files = [
            render_key(
                key_template, source=source, timestamp=timestamp, sequence_id=0, result_type=kind
            )
            for kind in ("zh", "en")
        ]
        answer: dict[str, JsonValue] = {
            "JobId": job_id,
            "FunctionName": "CaptionExtraction",
            "State": SUCCESS,
            "Input": self.url(_INPUT_BUCKETS[0], f"lectures/{source}.mp4"),
            "Output": self.url(_OUTPUT_BUCKETS[0], key_template),
            "PipelineId": self.default_pipeline,
            "JobParams": '{"fps":5,"sep":true,"formatter":"{\\\\an8}"}',
            "UserData": '{"course":"CS101","lecture":3}',
            "Result": success_result(files),
        }
        return StaticJob(job_id, answer)

    def quirks(self) -> list[StaticJob]:
        jobs = []
        for slug, description in QUIRKS.items():
            job_id = self.hex_id()
            answer = self._quirk_answer(slug, job_id)
            jobs.append(StaticJob(job_id, answer, quirk=f"{slug}: {description}"))
        return jobs

    def _quirk_answer(self, slug: str, job_id: str) -> dict[str, JsonValue]:
        source = f"{self.rng.choice(_NAMES)}-quirk"
        timestamp = self.timestamp_ms()
        file = f"iproduction/{source}-{timestamp}-0.jpg"
        answer: dict[str, JsonValue] = {
            "JobId": job_id,
            "FunctionName": "ImageCartoonize",
            "State": SUCCESS,
            "Input": self.url(_INPUT_BUCKETS[1], f"quirks/{source}.jpg"),
            "Output": self.url(
                _OUTPUT_BUCKETS[0], "iproduction/{source}-{timestamp}-{sequenceId}.jpg"
            ),
            "PipelineId": self.default_pipeline,
            "JobParams": '{"Model":"gif"}',
            "UserData": "null",
            "Result": success_result([file]),
        }
        if slug == "state-typo":
            answer["FunctionName"] = "CaptionExtraction"
            answer["State"] = "Succes"
            answer["Output"] = self.url(
                _OUTPUT_BUCKETS[0], "captionextraction/{source}-{timestamp}.srt"
            )
            answer["Result"] = success_result([f"captionextraction/{source}-{timestamp}.srt"])
        elif slug == "state-unknown":
            answer["State"] = "Cancelled"
            answer.pop("Result")
        elif slug == "result-not-json":
            answer["Result"] = f"Success: {file}"
        elif slug == "data-not-json":
            answer["Result"] = encode_json(
                {"Code": "Success", "Data": file, "Message": "Successful."}
            )
        elif slug == "data-not-encoded":
            answer["Result"] = encode_json(
                {"Code": "Success", "Data": {"result": [{"file": file}]}, "Message": "Successful."}
            )
        elif slug == "params-not-json":
            answer["JobParams"] = "mode=gif; fps=5"
        elif slug == "function-missing":
            answer.pop("FunctionName")
        elif slug == "function-unknown":
            answer["FunctionName"] = "VideoSuperResolution"
            answer["Input"] = self.url(_INPUT_BUCKETS[1], f"quirks/{source}.mp4")
            answer["Output"] = self.url(
                _OUTPUT_BUCKETS[0], "iproduction/{source}-{timestamp}-{sequenceId}.mp4"
            )
            answer["Result"] = success_result([f"iproduction/{source}-{timestamp}-0.mp4"])
            answer["JobParams"] = "{}"
        elif slug == "output-not-oss":
            answer["Output"] = (
                f"https://{_OUTPUT_BUCKETS[0]}.oss-{REGION}.aliyuncs.com/iproduction/{{source}}.jpg"
            )
        return answer
