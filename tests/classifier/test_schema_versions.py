"""mail.classified v2 adds fields with defaults: records written with v1 still read."""

from __future__ import annotations

import io

from avro.io import BinaryEncoder, DatumWriter

from mailintake.contracts.avsc import load_schema
from mailintake.contracts.examples import example_messages
from mailintake.contracts.records import MailClassified, decode_record
from mailintake.contracts.topics import load_topics, schemas_dir
from mailintake.contracts.wire import frame

V1_ID = 2


def test_a_v1_record_reads_as_v2_with_the_new_fields_at_their_defaults():
    topic = load_topics()["mail.classified"]
    v1 = load_schema(schemas_dir() / "history" / "mail.classified" / "v1.avsc")
    example = example_messages(topic)[0].value
    v1_value = {field.name: example[field.name] for field in v1.fields}
    buffer = io.BytesIO()
    DatumWriter(v1).write(v1_value, BinaryEncoder(buffer))

    decision = decode_record("mail.classified", frame(V1_ID, buffer.getvalue()))

    assert isinstance(decision, MailClassified)
    assert decision.subject == example["subject"]
    assert (decision.body_html, decision.attachments, decision.references) == (None, [], [])
    assert not (decision.auto_submitted or decision.bulk or decision.loop or decision.bounce)
    assert decision.suppress_auto_answer is False and decision.bounce_original_message_id is None
