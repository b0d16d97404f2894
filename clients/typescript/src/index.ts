// QARR TypeScript client: QarrClient, typed chunks, one error tree (docs/typescript.md).
export { QarrClient, DEFAULT_MAX_RETRIES, DEFAULT_TARGET, DEFAULT_TIMEOUT_MS, TARGET_ENV } from "./client";
export type { CallOptions, ClientOptions } from "./client";
export {
  Cancelled,
  DeadlineExceeded,
  InvalidRequest,
  QarrError,
  ResourceExhausted,
  ServerError,
  Unauthenticated,
  Unavailable,
  fromServiceError,
  reasonOf,
  retryPushbackMs,
} from "./errors";
export type { QarrErrorInit } from "./errors";
export { BACKOFF, retryDelayMs } from "./retry";
export type { ChatMessage, Chunk, Completion, FinishReason, GenerateInput, Tier, TierProfile, Usage } from "./types";
