"""The prepare stage: cut a large GeoTIFF/VRT into PNG tiles on S3 and list them in a manifest."""
