// Between the client's types and the generated qarr.v1 messages (the only module that touches both).
import { FinishReason as PbFinish } from "./gen/qarr/v1/common";
import {
  BreakerState,
  type GenerateRequest,
  type GenerateResponse,
  HealthState,
  type TierInfo,
} from "./gen/qarr/v1/router_service";
import type { Chunk, Completion, FinishReason, GenerateInput, Tier } from "./types";
import { ServerError } from "./errors";

const FINISH: Partial<Record<PbFinish, FinishReason>> = {
  [PbFinish.FINISH_REASON_STOP]: "stop",
  [PbFinish.FINISH_REASON_LENGTH]: "length",
  [PbFinish.FINISH_REASON_CANCELLED]: "cancelled",
  [PbFinish.FINISH_REASON_ERROR]: "error",
};

/** The GenerateRequest for `input`; a TypeError unless exactly one of prompt and messages is set. */
export function buildRequest(input: GenerateInput): GenerateRequest {
  if ((input.prompt === undefined) === (input.messages === undefined)) {
    throw new TypeError("pass exactly one of prompt and messages");
  }
  return {
    prompt: input.prompt ?? "",
    messages: (input.messages ?? []).map((m) => ({ role: m.role, content: m.content })),
    sampling: {
      maxTokens: input.maxTokens,
      temperature: input.temperature,
      topP: input.topP,
      topK: input.topK,
      seed: input.seed,
      stop: input.stop ?? [],
    },
    routing: { tier: input.tier ?? "", latencyBudgetMs: input.latencyBudgetMs ?? 0, minAccuracy: input.minAccuracy },
    requestId: input.requestId ?? "",
  };
}

export function toChunk(msg: GenerateResponse): Chunk {
  const last = msg.finishReason !== PbFinish.FINISH_REASON_UNSPECIFIED;
  return {
    text: msg.text,
    generatedTokens: msg.generatedTokens,
    finishReason: last ? (FINISH[msg.finishReason] ?? "unspecified") : null,
    usage: last
      ? { promptTokens: msg.usage?.promptTokens ?? 0, completionTokens: msg.usage?.completionTokens ?? 0 }
      : null,
    tier: msg.tier,
    model: msg.model,
    quantization: msg.quantization,
    routingReason: msg.routingReason,
    attempts: msg.attempts,
  };
}

export function toCompletion(chunks: Chunk[]): Completion {
  const last = chunks[chunks.length - 1];
  if (!last || last.finishReason === null) {
    throw new ServerError("the stream ended without its closing message", { reason: "TRUNCATED_STREAM" });
  }
  return {
    text: chunks.map((c) => c.text).join(""),
    finishReason: last.finishReason,
    usage: last.usage ?? { promptTokens: 0, completionTokens: 0 },
    tier: last.tier,
    model: last.model,
    quantization: last.quantization,
    routingReason: last.routingReason,
    attempts: last.attempts,
  };
}

function enumName(names: Record<number, string>, value: number, prefix: string): string {
  return (names[value] ?? `${prefix}UNSPECIFIED`).replace(prefix, "");
}

export function toTier(t: TierInfo): Tier {
  return {
    name: t.name,
    model: t.model,
    quantization: t.quantization,
    address: t.address,
    health: enumName(HealthState, t.health, "HEALTH_STATE_"),
    maxModelLen: t.maxModelLen,
    breaker: enumName(BreakerState, t.breaker, "BREAKER_STATE_"),
    inFlight: t.inFlight,
    runningRequests: t.load?.runningRequests ?? 0,
    waitingRequests: t.load?.waitingRequests ?? 0,
    kvCacheUsage: t.load?.kvCacheUsage ?? 0,
    profile: t.profile
      ? {
          ttftMs: t.profile.ttftMs,
          decodeTokensPerSecond: t.profile.decodeTokensPerSecond,
          accuracy: t.profile.accuracy,
          costPerMillionTokens: t.profile.costPerMillionTokens,
          routable: t.profile.routable,
        }
      : null,
  };
}
