"""The qarr.v1 contract: generated stubs current, Buf-style enums, and the wire layout the byte relay relies on."""

import subprocess
import sys

from google.protobuf.descriptor import FieldDescriptor

from tests.harness import REPO
from qarr.v1 import common_pb2, router_service_pb2, tier_service_pb2


def test_committed_stubs_match_the_proto_files():
    """Regenerating the stubs from protos/ gives exactly the committed files."""
    result = subprocess.run([sys.executable, "scripts/gen_protos.py", "--check"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_enum_starts_with_its_prefixed_unspecified_value():
    """Buf style: value 0 of every enum is <ENUM_NAME>_UNSPECIFIED and every value carries the prefix."""
    for module in (common_pb2, router_service_pb2, tier_service_pb2):
        for enum in module.DESCRIPTOR.enum_types_by_name.values():
            prefix = "".join("_" + c if c.isupper() else c for c in enum.name).lstrip("_").upper() + "_"
            assert enum.values_by_number[0].name == prefix + "UNSPECIFIED"
            assert all(v.name.startswith(prefix) for v in enum.values)


def _fields(message) -> dict[int, tuple[str, int, str]]:
    return {
        f.number: (f.name, f.type, f.message_type.full_name if f.type == FieldDescriptor.TYPE_MESSAGE else "")
        for f in message.DESCRIPTOR.fields
    }


def test_tier_and_router_responses_share_field_numbers_1_to_7():
    """The router forwards tier chunks as bytes, so fields 1-7 must mean the same in both responses."""
    tier = _fields(tier_service_pb2.TierServiceGenerateResponse)
    router = _fields(router_service_pb2.GenerateResponse)
    assert {n: tier[n] for n in range(1, 8)} == {n: router[n] for n in range(1, 8)}


def test_tier_and_router_requests_share_prompt_messages_sampling_and_request_id():
    """The router forwards the caller's request bytes to the tier unchanged."""
    tier = _fields(tier_service_pb2.TierServiceGenerateRequest)
    router = _fields(router_service_pb2.GenerateRequest)
    for n in (1, 2, 3, 5):
        assert tier[n] == router[n]
    assert 4 not in tier  # routing hints: router-only


def test_a_last_message_is_told_apart_by_its_first_byte():
    """A message with finish_reason and no text encodes field 2 first (0x10); a text chunk never does."""
    last = tier_service_pb2.TierServiceGenerateResponse(
        finish_reason=common_pb2.FINISH_REASON_STOP, usage=common_pb2.Usage(prompt_tokens=3), generated_tokens=9, tier="t"
    ).SerializeToString()
    chunk = tier_service_pb2.TierServiceGenerateResponse(text="\x10", generated_tokens=1).SerializeToString()
    assert last[0] == 0x10
    assert chunk[0] != 0x10
