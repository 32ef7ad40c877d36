"""Typed media errors: every way a video or image file can fail to become frames, each naming the path and the
cause (`MediaDecodeError` and its subclasses)."""

from __future__ import annotations


class MediaDecodeError(ValueError):
    """A media file could not be turned into frames. The message names the path and the cause."""

    def __init__(self, path: str, cause: str, hint: str = ""):
        self.path = str(path)
        self.cause = cause
        message = f"{self.path}: {cause}"
        if hint:
            message += f" {hint}"
        super().__init__(message)

    def __reduce__(self):  # keeps the error picklable across dataloader worker processes
        return (self.__class__, (self.path, self.cause))


class VideoDecodeError(MediaDecodeError):
    """A video could not be decoded into frames."""


class VideoNotFoundError(VideoDecodeError, FileNotFoundError):
    """The video file does not exist."""


class NotAVideoError(VideoDecodeError):
    """The file exists but holds no decodable video stream."""


class EmptyVideoError(VideoDecodeError):
    """The video has no frames, or fewer than the two a temporal patch needs."""


class CorruptVideoError(VideoDecodeError):
    """The stream ends early or fails to decode (truncated or corrupt file)."""


class UnsupportedVideoError(VideoDecodeError):
    """A valid video that the chosen backend cannot decode, or would decode to wrong frames; another backend can."""


class AspectRatioError(VideoDecodeError):
    """The frames are too thin to resize (aspect ratio above 200)."""


class ImageDecodeError(MediaDecodeError):
    """An image could not be loaded."""


class ImageNotFoundError(ImageDecodeError, FileNotFoundError):
    """The image file does not exist."""
