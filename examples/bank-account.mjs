// The tutorials' bank account: three processes each try to draw 800 from 900.
// The balance lives in a shared Value and the RLock makes check-then-draw one
// step, so exactly one draw succeeds. (In the Python original the balance is a
// plain attribute, copied into each process, so all three "succeed".)
// Run: npx nodemp examples/bank-account.mjs
import { Process, RLock, Value, currentProcess } from 'nodemp';

class Account {
  constructor(accountNo, balance, lock) {
    this.accountNo = accountNo;
    this.balance = new Value('i', balance, { lock });
    this.lock = lock;
  }

  draw(amount) {
    this.lock.acquireSync();
    try {
      const name = currentProcess().name;
      if (this.balance.value >= amount) {
        console.log(`${name} drew ${amount}`);
        this.balance.value -= amount;
        console.log(`\tbalance: ${this.balance.value}`);
      } else {
        console.log(`${name} failed: balance too low`);
      }
    } finally {
      this.lock.release();
    }
  }
}

const acct = new Account('1234567', 900, new RLock());
const people = ['A', 'B', 'C'].map((name) => new Process({ name, target: () => acct.draw(800) }));
for (const p of people) p.start();
for (const p of people) await p.join();
console.log('final balance:', acct.balance.value);
