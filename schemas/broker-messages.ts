/**
 * What makes a URL a broker destination, and the headers of the broker messages Concord sends and
 * participants answer with: one definition for the relay, the engine and the SDK.
 */

/** kafka://<connection>/<topic> or rabbitmq://<connection>/<exchange>/<routing key>; anything else is called over HTTP. */
export function isBrokerUrl(url: string): boolean {
  return /^(kafka|rabbitmq):\/\//.test(url);
}

/** Header names (lower case: Kafka keeps them as sent, RabbitMQ and HTTP compare them so). */
export const brokerHeaders = {
  /** Stable across redeliveries, so a consumer's inbox can de-duplicate. */
  messageId: 'message-id',
  contentType: 'content-type',
  gid: 'dtm-gid',
  branchId: 'dtm-branch-id',
  transType: 'dtm-trans-type',
  /** action or compensate, on saga commands and their replies. */
  op: 'dtm-op',
} as const;

/** The DTM coordinates of a JSON message as headers (those given). */
export function dtmHeaders(at: { gid: string; branch_id?: string | undefined; trans_type?: string | undefined; op?: string | undefined }) {
  const headers: Record<string, string> = { [brokerHeaders.contentType]: 'application/json', [brokerHeaders.gid]: at.gid };
  if (at.branch_id !== undefined) headers[brokerHeaders.branchId] = at.branch_id;
  if (at.trans_type !== undefined) headers[brokerHeaders.transType] = at.trans_type;
  if (at.op !== undefined) headers[brokerHeaders.op] = at.op;
  return headers;
}

/** A Kafka client's answer to creating a topic that exists (the code, or its words): nothing to do. */
export function isTopicAlreadyThere(err: unknown): boolean {
  const text = JSON.stringify(err, Object.getOwnPropertyNames(err ?? {}));
  return text.includes('TOPIC_ALREADY_EXISTS') || /already exists/i.test(text);
}
