// Typed results: plain objects, never the generated protobuf messages (as in clients/types.py).

/** Why a stream ended; set on the last chunk only. */
export type FinishReason = "stop" | "length" | "cancelled" | "error" | "unspecified";

/** Token counts as the serving engine's tokenizer counted them. */
export interface Usage {
  promptTokens: number;
  completionTokens: number;
}

/** One streamed piece. The last chunk has no text and sets `finishReason`, `usage` and the tier fields. */
export interface Chunk {
  text: string;
  /** Tokens generated so far, this chunk's included. */
  generatedTokens: number;
  finishReason: FinishReason | null;
  usage: Usage | null;
  tier: string;
  model: string;
  quantization: string;
  /** Why this tier was chosen, e.g. "pinned". */
  routingReason: string;
  /** Tiers the router tried before one answered. */
  attempts: number;
}

/** A whole answer: the joined text, why it ended, its usage and the tier that served it. */
export interface Completion {
  text: string;
  finishReason: FinishReason;
  usage: Usage;
  tier: string;
  model: string;
  quantization: string;
  routingReason: string;
  attempts: number;
}

/** What the profiler measured for a tier. */
export interface TierProfile {
  ttftMs: number;
  decodeTokensPerSecond: number;
  accuracy: number;
  costPerMillionTokens: number;
  routable: boolean;
}

/** A tier as the router sees it (`health` and `breaker` are enum names without their prefix). */
export interface Tier {
  name: string;
  model: string;
  quantization: string;
  address: string;
  /** "SERVING", "NOT_SERVING", "UNKNOWN" or "UNSPECIFIED". */
  health: string;
  maxModelLen: number;
  /** "CLOSED", "OPEN", "HALF_OPEN" or "UNSPECIFIED". */
  breaker: string;
  /** Streams the router has open to this tier now. */
  inFlight: number;
  runningRequests: number;
  waitingRequests: number;
  kvCacheUsage: number;
  profile: TierProfile | null;
}

/** One turn of a chat; the tier applies the model's chat template. */
export interface ChatMessage {
  role: "system" | "user" | "assistant" | (string & {});
  content: string;
}

/** What to generate: exactly one of `prompt` (sent as is) and `messages`, plus sampling and routing options. */
export interface GenerateInput {
  prompt?: string;
  messages?: ChatMessage[];
  maxTokens?: number;
  /** 0 means greedy. */
  temperature?: number;
  topP?: number;
  topK?: number;
  seed?: number;
  /** Generation stops before any of these strings. */
  stop?: string[];
  /** Pin a tier by name (unknown names are InvalidRequest with reason UNKNOWN_TIER). */
  tier?: string;
  /** Predicted end-to-end latency must fit this budget; 0 = class default. */
  latencyBudgetMs?: number;
  /** Profiled accuracy (0-1) must be at least this. */
  minAccuracy?: number;
  /** Caller-chosen id, echoed in the router's logs and traces. */
  requestId?: string;
}
