"""What each smart-production algorithm takes and produces, as far as the simulator needs it.

MPS documents result files for a few algorithms only (docs/upstream.md section 1.5); for the
others the shapes here are plausible, not confirmed: every algorithm writes
`{"result": [{"file": ...}]}`, analysis algorithms (beats, chorus, audio quality) a `.json` file.
Cover and VideoClip write several files, which is why their Output templates carry `{sequenceId}`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Algorithm:
    name: str
    #: Extension of a typical input file.
    input_extension: str
    #: Extension of the files it writes.
    output_extension: str
    #: How many files one job writes.
    files: int
    #: A realistic JobParams (the documented ones where MPS documents them, else `{}`).
    params: str


ALGORITHMS: dict[str, Algorithm] = {
    algorithm.name: algorithm
    for algorithm in (
        Algorithm("VideoH2V", "mp4", "mp4", 1, "{}"),
        Algorithm("VideoDelogo", "mp4", "mp4", 1, "{}"),
        Algorithm("Cover", "mp4", "jpg", 3, "{}"),
        Algorithm("VideoClip", "mp4", "mp4", 3, "{}"),
        Algorithm("ImageMatting", "jpg", "png", 1, "{}"),
        Algorithm("ImageH2V", "jpg", "jpg", 1, "{}"),
        Algorithm("ImageDelogo", "png", "png", 1, "{}"),
        Algorithm("CaptionExtraction", "mp4", "srt", 1, '{"fps":5,"roi":[[0.75,1],[0,1]]}'),
        Algorithm("VideoDetext", "mp4", "mp4", 1, '{"Text":[[0.05,0.8,0.9,0.12]]}'),
        # Without `bgimage`, a WEBM with an alpha channel (docs/upstream.md section 1.5).
        Algorithm("VideoGreenScreenMatting", "mp4", "webm", 1, "{}"),
        Algorithm("MusicSegmentDetect", "mp3", "json", 1, "{}"),
        Algorithm("AudioMixing", "mp3", "m4a", 1, "{}"),
        Algorithm("VideoSplit", "mp4", "mp4", 1, "{}"),
        Algorithm("AudioBeatDetection", "mp3", "json", 1, "{}"),
        Algorithm("ImageCartoonize", "jpg", "jpg", 1, '{"Model":"gif"}'),
        # Its input must be a 16-bit WAV (docs/upstream.md section 1.4).
        Algorithm("AudioQualityAssessment", "wav", "json", 1, "{}"),
        Algorithm("FaceBeauty", "mp4", "mp4", 1, "{}"),
        Algorithm("SpeechDenoise", "wav", "wav", 1, "{}"),
    )
}
