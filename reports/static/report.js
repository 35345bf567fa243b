(function(){
function key(td){
  var v=td.getAttribute('data-sort'); if(v===null){v=td.textContent.trim();}
  if(v===''){return {e:1};}
  var n=Number(v); return isFinite(n)?{n:n}:{s:v.toLowerCase()};
}
function cmp(a,b){
  if(a.e||b.e){return (a.e?1:0)-(b.e?1:0);}
  if(a.n!==undefined&&b.n!==undefined){return a.n-b.n;}
  if(a.n!==undefined){return -1;} if(b.n!==undefined){return 1;}
  return a.s<b.s?-1:(a.s>b.s?1:0);
}
Array.prototype.forEach.call(document.querySelectorAll('table.sortable'),function(table){
  var ths=table.tHead.rows[0].cells;
  Array.prototype.forEach.call(ths,function(th,col){
    function sort(){
      var asc=th.getAttribute('aria-sort')!=='ascending';
      Array.prototype.forEach.call(ths,function(h){h.removeAttribute('aria-sort');});
      th.setAttribute('aria-sort',asc?'ascending':'descending');
      var body=table.tBodies[0];
      var rows=Array.prototype.slice.call(body.rows).map(function(r,i){return {r:r,k:key(r.cells[col]),i:i};});
      rows.sort(function(x,y){
        var c;
        if(x.k.e||y.k.e){c=cmp(x.k,y.k);} else {c=asc?cmp(x.k,y.k):cmp(y.k,x.k);}
        return c||x.i-y.i;
      });
      rows.forEach(function(x){body.appendChild(x.r);});
    }
    th.addEventListener('click',sort);
    th.addEventListener('keydown',function(ev){if(ev.key==='Enter'||ev.key===' '){ev.preventDefault();sort();}});
  });
});
var box=document.getElementById('cell-filter'), table=document.getElementById('summary-table');
if(box&&table){
  var count=document.getElementById('cell-count');
  box.addEventListener('input',function(){
    var terms=box.value.toLowerCase().split(/\s+/).filter(Boolean), shown=0, rows=table.tBodies[0].rows;
    Array.prototype.forEach.call(rows,function(r){
      var text=(r.textContent+' '+(r.getAttribute('data-cell')||'')).toLowerCase();
      var ok=terms.every(function(t){return text.indexOf(t)!==-1;});
      r.style.display=ok?'':'none'; if(ok){shown++;}
    });
    if(count){count.textContent=shown+' of '+rows.length+' cells';}
  });
}
})();
