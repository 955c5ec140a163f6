#!/bin/sh
# Makes tests/sim/sample-video.mp4, the video the MiniMax simulator hands out
# (minimax_sim.py pads it to video_bytes with a trailing `free` box): 2 s of
# ffmpeg's test pattern, 160x90, 10 frames/s, H.264 Constrained Baseline
# (what every player and Discord's own opens), moov before mdat, about 4 KB.
# The file is committed; run this only to change it. Needs Debian's ffmpeg
# (deploy/install-deps.sh installs it for the tests).
set -eu
out=$(dirname "$0")/sample-video.mp4
ffmpeg -v error -y -f lavfi -i testsrc=size=160x90:rate=10:duration=2 \
    -c:v libx264 -profile:v baseline -level 3.0 -pix_fmt yuv420p -preset veryslow -crf 30 -g 20 \
    -bsf:v filter_units=remove_types=6 -movflags +faststart -an -map_metadata -1 \
    -fflags +bitexact -flags:v +bitexact -metadata:s:v handler_name=VideoHandler "$out"
echo "$out: $(wc -c <"$out") bytes"
