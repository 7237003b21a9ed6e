"""Hub consumers: each gets every accepted event, at its own pace, from its own durable cursor."""
