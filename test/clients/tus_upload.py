"""Uploads a file with tus-py-client (Debian's python3-tuspy), a tus client AI Farm did not write.

    tus_upload.py ENDPOINT TOKEN CLIENT_ID FILE [--stop-at N] [--url LOCATION]

ENDPOINT is a rank's update URL with its query (attempt, num_samples). With --stop-at it sends
chunks until at least N bytes are on the server and stops, as a worker cut off would; with
--url it resumes that upload from the offset the server gives (HEAD). It prints one JSON line:
the upload's URL, the offset reached, the headers of the last answer, and the file's digest
computed here, independently of the server (docs/protocol.md: sha256 of each 4 MiB piece, then
sha256 of the pieces' digests).
"""
import argparse
import hashlib
import json

from tusclient import client

PIECE = 4 * 1024 * 1024


def piece_digest(path):
    outer = hashlib.sha256()
    with open(path, 'rb') as f:
        while True:
            piece = f.read(PIECE)
            if not piece:
                break
            outer.update(hashlib.sha256(piece).digest())
    return outer.hexdigest()


def main():
    p = argparse.ArgumentParser()
    p.add_argument('endpoint')
    p.add_argument('token')
    p.add_argument('client_id')
    p.add_argument('file')
    p.add_argument('--stop-at', type=int, default=None)
    p.add_argument('--url', default=None)
    a = p.parse_args()
    tus = client.TusClient(a.endpoint, headers={
        'Authorization': 'Bearer ' + a.token,
        'X-AI-Farm-Client': a.client_id,
    })
    uploader = tus.uploader(file_path=a.file, chunk_size=3 * 1024 * 1024, url=a.url,
                            upload_checksum=True, store_url=False)
    uploader.upload(stop_at=a.stop_at)
    headers = dict(uploader.request.response_headers) if uploader.request else {}
    print(json.dumps({
        'url': uploader.url,
        'offset': uploader.offset,
        'headers': {k.lower(): v for k, v in headers.items()},
        'digest': piece_digest(a.file),
    }))


if __name__ == '__main__':
    main()
