import { connect } from 'amqplib';

/** Resolves when the broker accepts an AMQP connection with the URL's credentials; throws otherwise. */
export async function probeAmqp(url: string): Promise<void> {
  const connection = await connect(url, { timeout: 2_000 });
  connection.on('error', () => {}); // a broker going away surfaces through close()
  await connection.close();
}
