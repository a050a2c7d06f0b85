"""The integration queue: model, pure scheduler, durable store, worker and notifications."""
