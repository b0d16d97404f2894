// One error tree for the client; gRPC statuses are mapped to it in `fromServiceError` only
// (the same table as the Python SDK's clients/errors.py).
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import { Metadata, status as Status, type ServiceError } from "@grpc/grpc-js";

const DETAILS_KEY = "grpc-status-details-bin";
const ERROR_INFO_TYPE = "type.googleapis.com/google.rpc.ErrorInfo";
/** gRFC A6: how long to wait before retrying; negative: the server already retried, do not. */
const PUSHBACK_KEY = "grpc-retry-pushback-ms";

export interface QarrErrorInit {
  code?: Status;
  reason?: string;
  metadata?: Metadata;
  retryable?: boolean;
  retryAfterMs?: number | null;
  cause?: unknown;
}

/** Base of every error the client raises for a failed call. */
export class QarrError extends Error {
  /** Whether calling again may help, for errors of this class unless the server says otherwise. */
  static readonly retryable: boolean = false;

  /** The gRPC status code (`status.UNAVAILABLE`, ...), undefined where no call was made. */
  readonly code: Status | undefined;
  /** The server's `google.rpc.ErrorInfo` reason, e.g. "UNKNOWN_TIER"; "" when none was sent. */
  readonly reason: string;
  /** The call's trailing metadata, when the server sent any. */
  readonly metadata: Metadata | undefined;
  /**
   * Whether calling again may help: Unavailable and ResourceExhausted, unless the server said it already
   * retried (a negative `grpc-retry-pushback-ms`: NO_HEALTHY_TIER, TIERS_FULL, a tier that failed after
   * the router's own retries). The client's retry rule follows it; your code can too.
   */
  readonly retryable: boolean;
  /** The server's suggested wait before a retry (`grpc-retry-pushback-ms` >= 0), else null. */
  readonly retryAfterMs: number | null;

  constructor(message: string, init: QarrErrorInit = {}) {
    super(message, init.cause === undefined ? undefined : { cause: init.cause });
    this.name = new.target.name;
    this.code = init.code;
    this.reason = init.reason ?? "";
    this.metadata = init.metadata;
    this.retryable = init.retryable ?? (new.target as typeof QarrError).retryable;
    this.retryAfterMs = init.retryAfterMs ?? null;
  }

  /** The status name ("UNAVAILABLE", ...) or "" without a code. */
  get codeName(): string {
    return this.code === undefined ? "" : Status[this.code];
  }
}

/** The request cannot be served as asked (INVALID_ARGUMENT, NOT_FOUND, OUT_OF_RANGE, ...). */
export class InvalidRequest extends QarrError {}
/** The mesh or every fitting tier is down (UNAVAILABLE). */
export class Unavailable extends QarrError {
  static override readonly retryable: boolean = true;
}
/** The router or tier is at its admission limit (RESOURCE_EXHAUSTED). */
export class ResourceExhausted extends QarrError {
  static override readonly retryable: boolean = true;
}
/** The deadline passed before the answer was complete (DEADLINE_EXCEEDED). */
export class DeadlineExceeded extends QarrError {}
/** The call was cancelled (CANCELLED), by its AbortSignal or by the server. */
export class Cancelled extends QarrError {}
/** Credentials missing or wrong (UNAUTHENTICATED, PERMISSION_DENIED). */
export class Unauthenticated extends QarrError {}
/** The server failed (INTERNAL, UNKNOWN, DATA_LOSS, UNIMPLEMENTED, ...). */
export class ServerError extends QarrError {}

const BY_CODE = new Map<Status, typeof QarrError>([
  [Status.INVALID_ARGUMENT, InvalidRequest],
  [Status.NOT_FOUND, InvalidRequest],
  [Status.OUT_OF_RANGE, InvalidRequest],
  [Status.FAILED_PRECONDITION, InvalidRequest],
  [Status.ALREADY_EXISTS, InvalidRequest],
  [Status.UNAVAILABLE, Unavailable],
  [Status.RESOURCE_EXHAUSTED, ResourceExhausted],
  [Status.DEADLINE_EXCEEDED, DeadlineExceeded],
  [Status.CANCELLED, Cancelled],
  [Status.UNAUTHENTICATED, Unauthenticated],
  [Status.PERMISSION_DENIED, Unauthenticated],
]);

/** The QarrError for a failed grpc-js call. */
export function fromServiceError(e: ServiceError, cause?: unknown): QarrError {
  const cls = BY_CODE.get(e.code) ?? ServerError;
  const pushback = retryPushbackMs(e.metadata);
  return new cls(e.details || Status[e.code] || String(e.code), {
    code: e.code,
    reason: reasonOf(e.metadata),
    metadata: e.metadata,
    retryable: cls.retryable && (pushback === null || pushback >= 0),
    retryAfterMs: pushback !== null && pushback >= 0 ? pushback : null,
    cause: cause ?? e,
  });
}

/** The server's retry pushback in ms (negative: do not retry; unreadable counts as -1), or null when none. */
export function retryPushbackMs(metadata: Metadata | undefined): number | null {
  const [value] = metadata?.get(PUSHBACK_KEY) ?? [];
  if (value === undefined) return null;
  const text = value.toString().trim();
  return /^[+-]?\d+$/.test(text) ? Number.parseInt(text, 10) : -1;
}

/** True for the errors grpc-js reports for a call (a status code and details). */
export function isServiceError(e: unknown): e is ServiceError {
  return e instanceof Error && typeof (e as ServiceError).code === "number" && "details" in e;
}

/** The ErrorInfo reason in a call's `grpc-status-details-bin` trailer (a google.rpc.Status), or "". */
export function reasonOf(metadata: Metadata | undefined): string {
  for (const value of metadata?.get(DETAILS_KEY) ?? []) {
    if (typeof value === "string") continue;
    try {
      for (const detail of fields(value, 3)) {
        const [typeUrl] = fields(detail, 1);
        const [info] = fields(detail, 2);
        if (typeUrl && info && new TextDecoder().decode(typeUrl) === ERROR_INFO_TYPE) {
          const [reason] = fields(info, 1);
          return reason ? new TextDecoder().decode(reason) : "";
        }
      }
    } catch {
      return ""; // a malformed trailer is no reason
    }
  }
  return "";
}

// The length-delimited values of field `no` in an encoded message: enough wire format to read
// google.rpc.Status.details (3) -> Any.type_url (1) / value (2) -> ErrorInfo.reason (1).
function fields(buf: Uint8Array, no: number): Uint8Array[] {
  const reader = new BinaryReader(buf);
  const out: Uint8Array[] = [];
  while (reader.pos < reader.len) {
    const [fieldNo, wireType] = reader.tag();
    if (fieldNo === no && wireType === WireType.LengthDelimited) out.push(reader.bytes());
    else reader.skip(wireType, fieldNo);
  }
  return out;
}
