"""Stage 1, fetch: raw log bytes from files, buckets or OpenSearch, framed into lines and
parsed into (time, batch, message) records, every bad record counted by reason."""
