"""Dead letters on ``mail.dlq``: listing them and replaying them under an explicit policy.

``selection`` and ``replay_plan`` are pure (what to show, what to replay); ``kafka_log``
reads the topics to their end; ``cli`` is ``mailintake dlq list | replay``.
"""
