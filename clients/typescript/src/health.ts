// grpc.health.v1.Health/Check, encoded by hand: one string field out, one enum field back.
import { BinaryReader, BinaryWriter, WireType } from "@bufbuild/protobuf/wire";

export const HEALTH_CHECK_PATH = "/grpc.health.v1.Health/Check";
const STATUS_NAMES = ["UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"];

/** HealthCheckRequest { string service = 1; } */
export function encodeHealthCheckRequest(service: string): Buffer {
  const writer = new BinaryWriter();
  if (service) writer.tag(1, WireType.LengthDelimited).string(service);
  return Buffer.from(writer.finish());
}

/** HealthCheckResponse { ServingStatus status = 1; } as the status name ("SERVING", ...). */
export function decodeHealthCheckResponse(buf: Buffer): string {
  const reader = new BinaryReader(buf);
  let status = 0;
  while (reader.pos < reader.len) {
    const [fieldNo, wireType] = reader.tag();
    if (fieldNo === 1 && wireType === WireType.Varint) status = reader.int32();
    else reader.skip(wireType, fieldNo);
  }
  return STATUS_NAMES[status] ?? String(status);
}
