/**
 * Topic subscriptions as the API changes them: a subscriber must be a destination the relay can
 * reach, and each change names what was missing or already there.
 */
import { ConcordError } from '../../schemas/errors.js';
import { deleteTopic, subscribe, unsubscribe } from '../store/topics.js';
import type { EngineContext } from './context.js';

export class Topics {
  constructor(private readonly ctx: Pick<EngineContext, 'database' | 'relay'>) {}

  async subscribe(topic: string, url: string, remark: string): Promise<void> {
    const problem = this.ctx.relay.problem(url);
    if (problem) throw new ConcordError('INVALID_REQUEST', problem, { field: 'url' });
    if (!(await subscribe(this.ctx.database, topic, { url, remark }))) {
      throw new ConcordError('INVALID_STATE', `${url} already subscribes topic ${topic}`, { field: 'url' });
    }
  }

  async unsubscribe(topic: string, url: string): Promise<void> {
    if (!(await unsubscribe(this.ctx.database, topic, url))) {
      throw new ConcordError('NOT_FOUND', `${url} does not subscribe topic ${topic}`, { field: 'url' });
    }
  }

  /** Deletes the topic with all its subscribers. */
  async delete(topic: string): Promise<void> {
    if (!(await deleteTopic(this.ctx.database, topic))) {
      throw new ConcordError('NOT_FOUND', `no topic ${topic}`, { field: 'topicName' });
    }
  }
}
