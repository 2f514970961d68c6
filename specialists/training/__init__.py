"""Training the specialists: plain torch / ultralytics code over Arrow annotations, no Ray, no Prefect."""
