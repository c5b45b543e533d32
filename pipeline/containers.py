"""What vidbrief lets FFmpeg open: the one list of demuxers and protocols for untrusted media."""

from __future__ import annotations

#: Options for every av.open of downloaded media: only plain container demuxers, and no
#: protocol but local files — playlist demuxers (hls, concat, dash) would open the URLs or
#: paths listed inside an untrusted file.
AV_CONTAINER_OPTIONS = {
    "format_whitelist": "mov,matroska,mpegts,flv,avi,ogg,mpeg,asf,wav,mp3,aac,flac,h264,hevc",
    "protocol_whitelist": "file",
}
